"""calico-node's readiness and liveness probes (`-bird-ready`, `-bird6-ready`, `-bird-live`,
`-bird6-live`, `-felix-ready`, `-felix-live`, with `-threshold-time`), as Calico's
node/pkg/health. Each returns (ok, message); a failure's message is the line Calico prints.

- bird ready: no peer of the family is ready. While the nodename file (written by start-up) is
  younger than the threshold (30 s), every peer of the family must be Established and no
  graceful-restart recovery may be running, so a rolling restart waits until this node's BGP is
  back; later one Established peer is enough, so one dead node does not make every node unready.
- bird live: BIRD answers on its control socket (one BIRD 2 for both families: `-bird6-live`
  asks the same daemon).
- felix ready / live: no Felix runs here; they ask calico-node itself over the plugins' socket
  (the agent's HEALTH request): ready when the datastore watch is in sync and every part is
  ready; live when every part's loop runs and, with a threshold, each had a good pass recently.

Probes run every few seconds: this module imports no gRPC and no plugin code.
"""

from __future__ import annotations

import json
import os
import socket as _socket
import time
from typing import Any

from calico_cni.agent import wire
from calico_cni.dataplane.bird import BirdError, BirdUnreachable, Control, calico_peers
from calico_cni.node.settings import DEFAULT_THRESHOLD_TIME

FELIX_TIMEOUT = 5.0

Result = tuple[bool, str]


def bird_ready(version: int, socket: str, nodename_file: str, threshold: float = DEFAULT_THRESHOLD_TIME, now: float | None = None) -> Result:
    """Calico's -bird-ready (version 4) / -bird6-ready (6)."""
    prefix = f"calico/node is not ready: {'BIRD' if version == 4 else 'BIRD6'} is not ready: "
    try:
        started = os.stat(nodename_file).st_mtime
    except OSError as exc:
        return False, f"{prefix}Failed to stat() nodename file: {exc}"
    control = Control(socket)
    try:
        peers = calico_peers(control.show_protocols(), version)
    except BirdUnreachable as exc:
        return False, f"{prefix}Error querying BIRD: unable to connect to BIRDv{version} socket: {exc}"
    except BirdError as exc:
        return False, f"{prefix}Error executing command: {exc}"
    down = [p.address for p in peers if not p.established]
    if not peers:
        return True, f"BIRD is ready: no IPv{version} BGP peers"
    now = time.time() if now is None else now
    if now - started < threshold:
        if down:
            return False, f"{prefix}BGP not established with {','.join(down)}"
        try:
            if control.graceful_restart_in_progress():
                return False, f"{prefix}graceful restart in progress"
        except BirdError as exc:
            return False, f"{prefix}{exc}"
    elif len(down) == len(peers):
        return False, f"{prefix}BGP not established with {','.join(down)}"
    return True, f"BIRD is ready: BGP established with {len(peers) - len(down)} of {len(peers)} IPv{version} peers"


def bird_live(version: int, socket: str) -> Result:
    """Calico's -bird-live / -bird6-live: BIRD answers on its control socket."""
    name = "bird" if version == 4 else "bird6"
    try:
        reply = Control(socket).show_status()
    except BirdError as exc:
        return False, f"calico/node is not ready: {name} is not live: {exc}"
    first = reply.lines[0].text if reply.lines else ""
    if not first.startswith("BIRD"):
        return False, f"calico/node is not ready: bad response from {name}: {reply.text()}"
    return True, f"{name} is live: {first}"


def _health(cni_socket: str) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """calico-node's health answer on the plugins' socket and its parts by name; OSError/ValueError
    when none comes or it names no part. Every step is bounded by FELIX_TIMEOUT, the connect too: a daemon that stopped accepting
    fills its listen queue, and a blocking connect to a full Unix socket queue waits forever."""
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM | _socket.SOCK_CLOEXEC)
    try:
        sock.settimeout(FELIX_TIMEOUT)
        try:
            sock.connect(cni_socket)
        except (FileNotFoundError, ConnectionRefusedError):
            raise OSError(f"nothing answers on {cni_socket}") from None
        except BlockingIOError:
            raise OSError(f"calico-node accepts no connection on {cni_socket} (its queue is full: it is stuck)") from None
        wire.send_request(sock, wire.HEALTH, {}, b"")
        code, out, _ = wire.recv_answer(sock)
    except wire.Truncated as exc:
        raise OSError(f"no answer on {cni_socket}: {exc}") from None
    except TimeoutError:
        raise OSError(f"no answer on {cni_socket} within {FELIX_TIMEOUT:g} s") from None
    finally:
        sock.close()
    answer = json.loads(out)
    if code != 0 or not isinstance(answer, dict):
        raise ValueError(f"unexpected health answer on {cni_socket}: {out[:200]!r}")
    parts = answer.get("parts")
    if not isinstance(parts, dict) or not parts:
        raise ValueError(f"the daemon on {cni_socket} reports no parts (is it calico-cni-agent rather than calico-node?)")
    return answer, {str(k): v if isinstance(v, dict) else {} for k, v in parts.items()}


def _why(part: dict[str, Any]) -> str:
    detail = part.get("detail") or part.get("last_error")
    return f" ({detail})" if detail else ""


def felix_ready(cni_socket: str) -> Result:
    """-felix-ready: the datastore watch is in sync and every part of calico-node is ready."""
    prefix = "calico/node is not ready: felix is not ready: "
    try:
        answer, parts = _health(cni_socket)
    except (OSError, ValueError) as exc:
        return False, f"{prefix}{exc}"
    problems = [] if answer.get("in_sync") is True else ["the datastore watch is not in sync"]
    problems += [f"{name} is not ready{_why(p)}" for name, p in sorted(parts.items()) if p.get("ready") is not True]
    if problems:
        return False, prefix + "; ".join(problems)
    return True, f"calico-node is ready: {', '.join(sorted(parts))}"


def felix_live(cni_socket: str, threshold: float | None = None, now: float | None = None) -> Result:
    """-felix-live: every part's loop runs; with `threshold`, each part that passes periodically had
    a good pass within the threshold, or two of its periods if longer (a part that never had one
    counts from the daemon's start). A part that passes only when something happens (the syncer:
    a watch batch) is judged by its loop running: an etcd outage makes the node not ready, and a
    liveness restart could not end it."""
    prefix = "calico/node is not ready: Felix is not live: "
    try:
        answer, parts = _health(cni_socket)
    except (OSError, ValueError) as exc:
        return False, f"{prefix}{exc}"
    now = time.time() if now is None else now
    problems = []
    for name, part in sorted(parts.items()):
        if part.get("alive") is not True:
            problems.append(f"{name} is not running{_why(part)}")
        elif threshold is not None and isinstance(part.get("period"), (int, float)):
            limit = max(threshold, 2 * part["period"])
            last_ok = part.get("last_ok")
            if isinstance(last_ok, (int, float)):
                if now - last_ok > limit:
                    problems.append(f"{name} has had no good pass for {now - last_ok:.0f} s{_why(part)}")
            elif float(answer.get("uptime_s") or 0) > limit:
                problems.append(f"{name} has had no good pass since calico-node started {float(answer['uptime_s']):.0f} s ago{_why(part)}")
    if problems:
        return False, prefix + "; ".join(problems)
    return True, f"calico-node is live: {', '.join(sorted(parts))}"


def run(name: str, settings: Any) -> Result:
    """One probe by its flag name ("bird-ready", "bird6-ready", "bird-live", "bird6-live",
    "felix-ready", "felix-live") with calico-node's settings (bird_socket, nodename_file,
    cni_socket, threshold_time). A threshold_time of None (no -threshold-time) is Calico's 30 s
    for -bird-ready and no age check for -felix-live."""
    threshold = getattr(settings, "threshold_time", None)
    if name in ("bird-ready", "bird6-ready"):
        version = 6 if name.startswith("bird6") else 4
        return bird_ready(version, settings.bird_socket, settings.nodename_file, DEFAULT_THRESHOLD_TIME if threshold is None else threshold)
    if name in ("bird-live", "bird6-live"):
        return bird_live(6 if name.startswith("bird6") else 4, settings.bird_socket)
    if name == "felix-ready":
        return felix_ready(settings.cni_socket)
    if name == "felix-live":
        return felix_live(settings.cni_socket, threshold)
    raise ValueError(f"unknown probe {name!r}")
