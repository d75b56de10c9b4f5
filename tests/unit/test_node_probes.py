"""calico-node's probes as the command line runs them (settings.from_args, then probes.run), and
their bounds: what -threshold-time means when it is not given, and that a daemon which does not
accept connections cannot hang a probe. A fake daemon on a Unix socket in tmp_path answers the
HEALTH request; no root, no BIRD, no etcd. (tests/unit/test_bird_protocols.py tests each probe's
answers.)"""

from __future__ import annotations

import json
import os
import socket
import threading
import time

import pytest

from calico_cni.agent import wire
from calico_cni.node import probes
from calico_cni.node.settings import from_args
from tests.unit import test_bird_protocols
from tests.unit.test_bird_protocols import FakeDaemon

# A BIRD control socket answering each command with the reply given for it (theirs).
fake_bird = test_bird_protocols.fake_bird


@pytest.fixture
def run_dir(tmp_path):
    path = tmp_path / "run"
    path.mkdir()
    return path


def settings(run_dir, *flags: str):
    return from_args([*flags, "--calico-run-dir", str(run_dir)], {"NODENAME": "node1", "CALICO_STATE_DIR": str(run_dir.parent / "state")})


def part(last_ok: float | None, period: float | None = None) -> dict:
    return {"alive": True, "ready": True, "restarts": 0, "last_error": None, "last_ok": last_ok, "detail": None, "period": period}


def test_felix_live_checks_no_age_unless_threshold_time_is_given(run_dir):
    # A part whose loop runs but whose last good pass is old: alive, so -felix-live passes; only
    # -threshold-time asks for a recent pass, of the parts that pass periodically (routing, every
    # 2 s). The syncer passes only when etcd says something: its loop running is its liveness.
    now = time.time()
    daemon = FakeDaemon(str(run_dir / "cni.sock"), {"uptime_s": 300, "in_sync": True,
                                                     "parts": {"syncer": part(now - 300), "routing": part(now - 300, period=2.0), "addresses": part(now - 50, period=60.0)}})
    try:
        plain = settings(run_dir, "-felix-live")
        assert plain.threshold_time is None
        assert probes.run("felix-live", plain) == (True, "calico-node is live: addresses, routing, syncer")
        strict = settings(run_dir, "-felix-live", "-threshold-time", "60s")
        ok, message = probes.run("felix-live", strict)
        # addresses: 50 s old, within two of its 60 s periods; syncer: no period, not aged.
        assert not ok and message == "calico/node is not ready: Felix is not live: routing has had no good pass for 300 s", message
    finally:
        daemon.close()


def test_bird_ready_without_threshold_time_uses_calicos_30_seconds(run_dir, monkeypatch):
    seen = []
    monkeypatch.setattr(probes, "bird_ready", lambda version, sock, nodename, threshold: seen.append((version, threshold)) or (True, ""))
    probes.run("bird-ready", settings(run_dir, "-bird-ready"))
    probes.run("bird6-ready", settings(run_dir, "-bird6-ready", "-threshold-time", "1m"))
    assert seen == [(4, 30.0), (6, 60.0)]


@pytest.fixture
def stuck_listener(tmp_path):
    """A socket that listens but never accepts (a stuck daemon), its queue filled by other
    connections: a blocking connect to it would wait forever."""
    path = str(tmp_path / "stuck.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(0)
    fillers = []
    while True:
        filler = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        filler.setblocking(False)
        try:
            filler.connect(path)
        except BlockingIOError:
            filler.close()
            break
        fillers.append(filler)
        assert len(fillers) < 100, "the listen queue never filled"
    yield path
    listener.close()  # wakes a connect still blocked on it (with ECONNREFUSED)
    for filler in fillers:
        filler.close()


def bounded(call, seconds: float = 10.0):
    """`call()`'s result, or a failure when it has not returned within `seconds`."""
    result = []
    thread = threading.Thread(target=lambda: result.append(call()), daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), "the probe blocked"
    return result[0]


@pytest.mark.parametrize("probe", [probes.felix_ready, probes.felix_live])
def test_a_daemon_that_accepts_no_connection_does_not_hang_the_felix_probes(stuck_listener, probe):
    ok, message = bounded(lambda: probe(stuck_listener))
    assert not ok and message.endswith(f"calico-node accepts no connection on {stuck_listener} (its queue is full: it is stuck)")


def test_a_daemon_that_never_answers_is_reported_after_the_timeout(tmp_path, monkeypatch):
    monkeypatch.setattr(probes, "FELIX_TIMEOUT", 0.5)
    path = str(tmp_path / "silent.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(4)
    accepted = []
    thread = threading.Thread(target=lambda: accepted.append(listener.accept()[0]), daemon=True)
    thread.start()
    try:
        ok, message = bounded(lambda: probes.felix_ready(path))
        assert (ok, message) == (False, f"calico/node is not ready: felix is not ready: no answer on {path} within 0.5 s")
    finally:
        listener.close()
        thread.join(5)
        for conn in accepted:
            conn.close()


@pytest.mark.parametrize(
    "argv, daemon",
    [
        (["/usr/local/bin/calico-node"], True),
        (["/opt/calico-cni/bin/python", "-IS", "/usr/local/bin/calico-node"], True),
        (["python3", "-m", "calico_cni.node.main", "--log-level", "debug"], True),
        (["calico-node", "-felix-live"], False),
        (["calico-node", "--felix-live"], False),  # the probes take two dashes too
        (["/usr/local/bin/calico-node", "--bird6-ready", "-threshold-time", "10s"], False),
        (["calicoctl", "node", "status"], False),
    ],
)
def test_node_status_counts_the_daemon_not_its_probes(argv, daemon):
    from calico_cni.ctl import node_status

    assert node_status.is_calico_node(argv) is daemon


def test_bird_ready_reports_a_reply_it_cannot_read(fake_bird, tmp_path):
    nodename = tmp_path / "nodename"
    nodename.write_text("node1")
    # BIRD 1's table heading plus one it does not know: Calico's "unknown BIRD table output format".
    odd = fake_bird({"show protocols": b"2002-name proto table state since info extra\n0000 \n"}).path
    assert probes.bird_ready(4, odd, str(nodename)) == (False, "calico/node is not ready: BIRD is not ready: Error executing command: unknown BIRD table output format: name proto table state since info extra")
    # A refused command (BIRD's 9xxx reply) too.
    refusing = fake_bird({"show protocols": b"9001 syntax error, unexpected CF_SYM_UNDEFINED\n"}).path
    assert probes.bird_ready(4, refusing, str(nodename)) == (False, "calico/node is not ready: BIRD is not ready: Error executing command: BIRD refused show protocols: syntax error, unexpected CF_SYM_UNDEFINED")


def test_bird_live_reports_an_answer_that_is_not_birds(fake_bird):
    odd = fake_bird({"show status": b"0013 Daemon is up and running\n"}).path
    assert probes.bird_live(4, odd) == (False, "calico/node is not ready: bad response from bird: Daemon is up and running")
    assert probes.bird_live(6, odd)[1] == "calico/node is not ready: bad response from bird6: Daemon is up and running"


def felix_ready_against(path: str, respond) -> probes.Result:
    """probes.felix_ready asking a daemon on `path` that reads the request, then calls `respond`
    with the connection (and closes it)."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(4)

    def serve() -> None:
        with listener.accept()[0] as conn:
            wire.recv_request(conn)
            respond(conn)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        return probes.felix_ready(path)
    finally:
        thread.join(5)
        listener.close()


@pytest.mark.parametrize("code, answer", [(1, {"parts": {}}), (0, ["not", "an", "object"])])
def test_felix_probes_report_an_unexpected_health_answer(run_dir, code, answer):
    path = str(run_dir / "cni.sock")
    ok, message = felix_ready_against(path, lambda conn: wire.send_answer(conn, code, json.dumps(answer).encode()))
    assert not ok and message.startswith(f"calico/node is not ready: felix is not ready: unexpected health answer on {path}: ")


def test_felix_probes_report_an_answer_cut_short_or_not_json(run_dir):
    path = str(run_dir / "cni.sock")
    assert felix_ready_against(path, lambda conn: None) == (False, f"calico/node is not ready: felix is not ready: no answer on {path}: connection closed mid-frame")
    os.unlink(path)
    ok, message = felix_ready_against(path, lambda conn: wire.send_answer(conn, 0, b"{not json"))
    assert not ok and message.startswith("calico/node is not ready: felix is not ready: ")  # json's own words follow


def test_node_status_needs_root(monkeypatch):
    # As Calico's enforceRoot: run as another user, it says so and exits 1 before looking at
    # anything. The user is stood in for (a child dropped to nobody cannot import a checkout in a
    # private directory, as CI's is).
    from click.testing import CliRunner

    from calico_cni.ctl import node_status
    from calico_cni.ctl.main import cli

    monkeypatch.setattr(node_status.os, "geteuid", lambda: 65534)
    monkeypatch.setattr(node_status, "calico_node_running", lambda: pytest.fail("looked for calico-node before checking the user"))
    result = CliRunner().invoke(cli, ["node", "status"])
    assert (result.exit_code, result.stdout, result.stderr) == (1, "Need super user privileges: Operation not permitted\n", "")


def test_node_status_reports_a_bird_answer_it_cannot_read(fake_bird, tmp_path, monkeypatch):
    from click.testing import CliRunner

    from calico_cni.ctl import node_status

    sock = fake_bird({"show protocols": b"2002-name proto table state since info extra\n0000 \n"}).path
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "bird.ctl").symlink_to(sock)
    monkeypatch.setattr(node_status, "calico_node_running", lambda: True)  # the process scan is tested with real processes
    monkeypatch.setattr(node_status.os, "geteuid", lambda: 0)  # the pure tests also run as nobody; the root check is tested above
    result = CliRunner().invoke(node_status.status, ["--run-dir", str(run_dir)])
    assert result.exit_code == 1
    assert result.output == ("Calico process is running.\n"
                             "Error executing command: unknown BIRD table output format: name proto table state since info extra\n")
