"""The agent's socket server: one thread per request, no node-wide lock.

Each request runs through the same runner and handlers as the exec'd plugin, in this process, with
datastores over warm channels (`warm`). Its answer is the exit code and stdout the plugin would have
produced. The node's side of the work happens in the caller's network namespace (read from its
pid, SO_PEERCRED), so one agent serves every namespace of the machine that runs plugins. Request
threads never leave the agent's namespace, where the etcd channels live: namespace work runs on the
short-lived namespace threads of `dataplane.netns`, exactly as in the plugin: a thread that entered
a pod's namespace would open (or re-open) etcd connections from inside that pod.
"""

from __future__ import annotations

import io
import json
import logging
import os
import socket
import struct
import threading
import time
from typing import Callable, Mapping

from calico_cni import logs, timing
from calico_cni.agent import wire
from calico_cni.dataplane import netns as namespaces
from calico_cni.plugins.dispatch import request_logging
from calico_cni.plugins.errors import cni_error
from calico_cni.protocol.errors import INVALID_ENVIRONMENT, CniError
from calico_cni.protocol.request import CniRequest
from calico_cni.protocol.runner import error_output, run

log = logging.getLogger(__name__)
_PEERCRED = struct.Struct("3i")


def own_netns() -> tuple[int, int]:
    """(device, inode) of this process's network namespace: a caller in it is served in place."""
    st = os.stat("/proc/self/ns/net")
    return st.st_dev, st.st_ino


def peer(conn: socket.socket) -> tuple[int, int]:
    """(pid, uid) of the connected process (SO_PEERCRED)."""
    pid, uid, _gid = _PEERCRED.unpack(conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size))
    return pid, uid


def _caller_netns(conn: socket.socket, netns: tuple[int, int]) -> tuple[int | None, str, str | None]:
    """(fd of the caller's network namespace or None when it is the agent's own, its path, why
    the caller may not be served or None). Read at accept: the caller waits for its answer, so
    its pid names it until then."""
    pid, uid = peer(conn)
    if uid != os.geteuid():
        return None, "", f"caller uid {uid} is not the agent's ({os.geteuid()})"
    path = f"/proc/{pid}/ns/net"
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        return None, path, f"cannot open the caller's network namespace: {exc.strerror}"
    st = os.fstat(fd)
    if (st.st_dev, st.st_ino) == netns:
        os.close(fd)
        return None, path, None
    return fd, path, None


def _caller_paths(env: dict[str, str], netns_path: str) -> dict[str, str]:
    """CNI_NETNS as the caller meant it: /proc/self and /proc/thread-self name the caller, not
    the agent (netns_path is /proc/<caller pid>/ns/net)."""
    value = env.get("CNI_NETNS", "")
    for own in ("/proc/self/", "/proc/thread-self/"):
        if value.startswith(own) and netns_path:
            return {**env, "CNI_NETNS": netns_path.rsplit("/ns/net", 1)[0] + "/" + value[len(own) :]}
    return env


class Server:
    """Serves forwarded CNI requests on a listening Unix socket."""

    def __init__(
        self,
        listener: socket.socket,
        plugins: Mapping[str, Mapping[str, Callable[[CniRequest], dict | None]]],
        extra_health: Callable[[], dict] | None = None,
    ) -> None:
        """Serve `plugins` (plugin name -> verb -> handler, see `plugins.dispatch.verb_handlers`);
        `extra_health` adds the daemon's own state (calico-node's parts) to the health answer."""
        self.listener = listener
        self.extra_health = extra_health
        self.handlers = dict(plugins)
        self.netns = own_netns()
        self.served = 0
        self.started = time.monotonic()
        self._threads: set[threading.Thread] = set()
        self._lock = threading.Lock()
        self._stopping = threading.Event()

    def execute(self, plugin: str, env: dict[str, str], stdin: bytes) -> tuple[int, bytes, bytes]:
        """Run one request as the exec'd `plugin` would: (exit code, stdout, stderr)."""
        handlers = self.handlers.get(plugin)
        if handlers is None:
            return 1, error_output(CniError(INVALID_ENVIRONMENT, f"calico-cni-agent does not serve plugin {plugin!r}"), stdin), b""
        out, err = io.StringIO(), io.StringIO()
        started = timing.request_start() if timing.ENABLED else 0.0
        try:
            code = run(handlers, plugin, environ=env, stdin=stdin, stdout=out, setup=request_logging(plugin, err), translate=cni_error)
        finally:
            logs.end_request()
        if timing.ENABLED:
            # Where this request's time went in the daemon, for the plugin to print (bench/plugins.py).
            err.write(timing.request_line(started))
        return code, out.getvalue().encode(), err.getvalue().encode()

    def _serve(self, conn: socket.socket) -> None:
        fd = None
        try:
            with conn:
                fd, path, problem = _caller_netns(conn, self.netns)
                plugin, env, stdin = wire.recv_request(conn)
                if plugin == wire.HEALTH:
                    wire.send_answer(conn, 0, json.dumps(self.health()).encode())
                    return
                if problem is not None:
                    log.error("refused a %s request: %s", plugin, problem)
                    err = CniError(INVALID_ENVIRONMENT, "calico-cni-agent refused the request", problem)
                    wire.send_answer(conn, 1, error_output(err, stdin))
                    return
                with namespaces.serving(fd, path):
                    code, stdout, stderr = self.execute(plugin, _caller_paths(env, path), stdin)
                with self._lock:
                    self.served += 1
                wire.send_answer(conn, code, stdout, stderr)
        except (OSError, ValueError, wire.Truncated) as exc:
            log.warning("dropped a connection: %s", exc)
        except Exception:  # noqa: BLE001 - one bad request never ends the agent
            log.exception("unexpected failure serving a request")
        finally:
            if fd is not None:
                os.close(fd)
            with self._lock:
                self._threads.discard(threading.current_thread())

    def health(self) -> dict:
        """What `calico-cni-agent health` prints (and calico-node's felix probes read)."""
        with self._lock:
            in_flight = len(self._threads) - 1  # not counting the health request itself
        answer = {
            "status": "ok",
            "pid": os.getpid(),
            "uptime_s": round(time.monotonic() - self.started, 1),
            "served": self.served,
            "in_flight": max(in_flight, 0),
        }
        if self.extra_health is not None:
            answer.update(self.extra_health())
        return answer

    def serve_forever(self) -> None:
        """Accept until `stop`; each connection on a thread of its own."""
        while not self._stopping.is_set():
            try:
                conn, _ = self.listener.accept()
            except OSError:
                if self._stopping.is_set():
                    break
                raise
            thread = threading.Thread(target=self._serve, args=(conn,), name="cni-request", daemon=True)
            with self._lock:
                self._threads.add(thread)
            thread.start()

    def stop(self, wait: float = 60.0) -> None:
        """Stop accepting and let requests in flight finish (up to `wait` seconds in all, however
        many there are: a supervisor's stop timeout must hold)."""
        self._stopping.set()
        try:
            self.listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        with self._lock:
            threads = list(self._threads)
        deadline = time.monotonic() + wait
        for thread in threads:
            thread.join(max(deadline - time.monotonic(), 0))
