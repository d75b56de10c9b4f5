"""EtcdClient over etcd's JSON gateway (`datastore.etcd_gateway`) against real etcd 3.4: the same
answers and the same errors as over gRPC, keep-alive, deadlines and failover past a silent
endpoint, authentication, TLS, and the switch to gRPC (a long-lived client, an etcd without the
gateway, https without a user name). Also that a one-shot client never imports gRPC."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time

import pytest

from calico_cni.config import EtcdSettings
from calico_cni.datastore.errors import DatastoreCredentialsError, DatastoreRequestFailed, DatastoreUnavailable
from calico_cni.datastore.etcd import Compare, EtcdClient, Range
from tests import etcd_secure
from tests.conftest import FABRIC_ADDRESS
from tests.security_support import PASSWORD, TOKEN_TTL

GATEWAY_OFF_PORT = 23910  # an etcd started with --enable-grpc-gateway=false (peer port one above)


def grpc_client(endpoint: str, **settings) -> EtcdClient:
    """A client forced onto gRPC, as a long-lived one is."""
    c = EtcdClient(EtcdSettings((endpoint,), **settings))
    c.lease().close()
    assert not c.uses_gateway
    return c


@pytest.fixture
def pair(etcd_endpoint):
    """A gateway client and a gRPC client on the same empty etcd."""
    gw, rpc = EtcdClient(EtcdSettings((etcd_endpoint,))), grpc_client(etcd_endpoint)
    assert gw.uses_gateway
    yield gw, rpc
    gw.close()
    rpc.close()


def both(pair, fn):
    """fn run on the gateway client and then on the gRPC client: both results."""
    gw, rpc = pair
    return fn(gw), fn(rpc)


class Listener:
    """A TCP listener on the fabric address that accepts and then `answer`s each connection on a
    thread (None: never answers); it records what it read."""

    def __init__(self, answer=None, close_after: bool = False) -> None:
        self.close_after = close_after  # close after every answer, without saying so
        self.server = socket.socket()
        self.server.bind((FABRIC_ADDRESS, 0))
        self.server.listen(16)
        self.endpoint = f"http://{FABRIC_ADDRESS}:{self.server.getsockname()[1]}"
        self.answer, self.requests, self.conns, self.stop = answer, [], [], threading.Event()
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        self.server.settimeout(0.1)
        while not self.stop.is_set():
            try:
                conn = self.server.accept()[0]
            except OSError:
                continue
            self.conns.append(conn)
            if self.answer is not None:
                threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn) -> None:
        """Answer every request on the connection (HTTP/1.1 keep-alive), closing it after an
        answer that says Connection: close."""
        conn.settimeout(5)
        data = b""
        try:
            while True:
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    data += chunk
                head, _, data = data.partition(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                while len(data) < length:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    data += chunk
                data = data[length:]
                self.requests.append(head.split(b"\r\n", 1)[0].decode())
                conn.sendall(self.answer)
                if b"Connection: close" in self.answer or self.close_after:
                    conn.close()
                    return
        except OSError:
            pass

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        for c in self.conns:
            c.close()
        self.server.close()


# -- the same answers ------------------------------------------------------------------------------


def test_reads_and_commits_answer_as_over_grpc(pair):
    gw, rpc = pair
    binary = bytes(range(256))
    ok, rev = gw.commit([Compare("/calico/a", 0), Compare("/calico/b", 0)], [("/calico/a", b"1"), ("/calico/b", binary), ("/calico/e", b"")])
    assert ok and rev > 0
    # The same key again must not exist: the compare fails, nothing is written, no error.
    assert both(pair, lambda c: c.commit([Compare("/calico/a", 0)], [("/calico/a", b"2")])) == ((False, rev), (False, rev))
    assert both(pair, lambda c: c.get("/calico/b")) == (rpc.get("/calico/b"),) * 2
    assert gw.get("/calico/b").value == binary
    assert gw.get("/calico/e").value == b""  # an empty value: the gateway leaves the field out
    assert both(pair, lambda c: c.get("/calico/none")) == (None, None)
    full = both(pair, lambda c: c.get_prefix("/calico/"))
    assert full[0] == full[1] and [kv.key for kv in full[0]] == ["/calico/a", "/calico/b", "/calico/e"]
    keys = both(pair, lambda c: c.get_prefix("/calico/", keys_only=True))
    assert keys[0] == keys[1] and all(kv.value == b"" and kv.mod_revision == rev for kv in keys[0])
    assert both(pair, lambda c: c.get_prefix("/nothing/")) == ([], [])
    ranges = [Range("/calico/a"), Range("/calico/", prefix=True), Range("/x"), Range("/calico/", prefix=True, keys_only=True)]
    many = both(pair, lambda c: c.read(ranges))
    assert many[0] == many[1] and [len(kvs) for kvs in many[0][0]] == [1, 3, 0, 3]
    assert gw.read([]) == ([], rev)
    # At an older revision, and a prefix compare (nothing under it changed since a revision).
    a = gw.get("/calico/a")
    ok, rev2 = gw.commit([Compare("/calico/a", a.mod_revision)], [("/calico/a", b"3")], ["/calico/e"])
    assert ok and rev2 == rev + 1
    old = both(pair, lambda c: c.read([Range("/calico/", prefix=True)], revision=rev))
    assert old[0] == old[1] == ([full[1]], rev2)
    assert both(pair, lambda c: c.get_prefix("/calico/", revision=rev)) == (full[1], full[1])
    assert both(pair, lambda c: c.commit([Compare("/calico/", rev, prefix=True)], [("/calico/z", b"")])) == ((False, rev2), (False, rev2))
    ok, rev3 = gw.commit([Compare("/calico/", rev2, prefix=True)], [("/calico/z", b"z")])
    assert ok and rpc.get("/calico/z").value == b"z" and rpc.get("/calico/e") is None
    assert gw._client is None, "the gateway client made a gRPC channel"
    assert gw.uses_gateway


def test_a_failed_request_is_the_same_error_as_over_grpc(pair):
    gw, rpc = pair
    future = gw.read([])[1] + 1000
    errors = []
    for c in (gw, rpc):
        with pytest.raises(DatastoreRequestFailed) as exc:
            c.get_prefix("/calico/", revision=future)
        errors.append((exc.value.msg, exc.value.details))
    assert errors[0] == errors[1] == ("etcd request failed: OUT_OF_RANGE", "etcdserver: mvcc: required revision is a future revision")


def test_one_connection_serves_every_call_and_round_trips_are_counted(etcd_endpoint):
    c = EtcdClient(EtcdSettings((etcd_endpoint,)))
    try:
        c.get("/calico/a")
        conn = c._gateway[0].connection
        assert conn is not None
        for i in range(5):
            c.commit([], [(f"/calico/k{i}", b"v")])
        assert len(c.get_prefix("/calico/")) == 5
        assert c._gateway[0].connection is conn
        assert c.round_trips == 7
    finally:
        c.close()
    assert c._gateway[0].connection is None


def test_a_connection_etcd_closed_while_idle_is_made_again(etcd_endpoint):
    c = EtcdClient(EtcdSettings((etcd_endpoint,)))
    try:
        c.get("/calico/a")
        c._gateway[0].connection.sock.shutdown(socket.SHUT_RDWR)  # as when the server closes it
        assert c.commit([], [("/calico/a", b"1")])[0]
        assert c.get("/calico/a").value == b"1"
        assert c.round_trips == 3
    finally:
        c.close()


def test_a_one_shot_client_imports_neither_grpc_nor_protobuf_nor_http_client(etcd_endpoint):
    code = (
        "import sys, json\n"
        "from calico_cni.config import EtcdSettings\n"
        "from calico_cni.datastore.etcd import EtcdClient, Compare\n"
        f"c = EtcdClient(EtcdSettings(({etcd_endpoint!r},)))\n"
        "assert c.commit([Compare('/calico/x', 0)], [('/calico/x', b'1')])[0]\n"
        "assert c.get('/calico/x').value == b'1'\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in ('grpc', 'google', 'pyetcd', 'http', 'ssl', 'random'))))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert json.loads(out.stdout) == []


# -- deadlines and failover ---------------------------------------------------------------------------


@pytest.mark.parametrize("transport", ["gateway", "grpc"])
def test_a_silent_endpoint_is_failed_over_within_its_share_of_the_deadline(etcd_endpoint, transport):
    """Over both transports: calico-node and the agent (gRPC) fail over as a one-shot client does."""
    silent = Listener()
    try:
        c = EtcdClient(EtcdSettings((silent.endpoint, etcd_endpoint), timeout=4))
        # The silent one first (a one-shot client picks by process id, pyetcd at random).
        if transport == "gateway":
            c._open_gateway()
            c._gateway_current = 0
        else:
            c.lease().close()
            c._client._current_endpoint_label = silent.endpoint.partition("://")[2]
        start = time.monotonic()
        assert c.get("/calico/a") is None
        took = time.monotonic() - start
        assert 1.9 < took < 3, took  # the silent endpoint's share: timeout / 2 endpoints
        assert c.round_trips == 2
        # The silent endpoint is skipped now: the next call goes straight to etcd.
        start = time.monotonic()
        assert c.get("/calico/a") is None
        assert time.monotonic() - start < 0.5
        c.close()
    finally:
        silent.close()


@pytest.mark.parametrize("transport", ["gateway", "grpc"])
def test_a_silent_endpoint_alone_ends_at_the_deadline_as_unreachable(transport):
    silent = Listener()
    make = EtcdClient if transport == "gateway" else lambda settings: grpc_client(settings.endpoints[0], timeout=settings.timeout)
    try:
        c = make(EtcdSettings((silent.endpoint,), timeout=1))
        start = time.monotonic()
        with pytest.raises(DatastoreUnavailable) as exc:
            c.get("/calico/a")
        assert 0.9 < time.monotonic() - start < 1.6
        assert exc.value.details.startswith(f"deadline of 1s exceeded: Endpoint({silent.endpoint}): Deadline Exceeded"), exc.value.details
        # The invocation's deadline bounds the call too, and says so.
        c = make(EtcdSettings((silent.endpoint,), timeout=30))
        c.deadline_at = time.monotonic() + 0.5
        with pytest.raises(DatastoreUnavailable) as exc:
            c.commit([], [("/calico/a", b"1")])
        assert time.monotonic() - c.deadline_at < 0.5
        assert "the invocation's deadline (add_timeout) was reached" in exc.value.details
    finally:
        silent.close()


def test_a_closed_port_is_unavailable_and_retried_until_the_deadline():
    s = socket.socket()
    s.bind((FABRIC_ADDRESS, 0))
    endpoint = f"http://{FABRIC_ADDRESS}:{s.getsockname()[1]}"
    s.close()  # nobody listens there: connection refused
    c = EtcdClient(EtcdSettings((endpoint,), timeout=1))
    with pytest.raises(DatastoreUnavailable) as exc:
        c.get("/calico/a")
    assert "Connection refused" in exc.value.details and c.round_trips > 1


def test_a_host_name_no_resolver_can_encode_is_named_as_such():
    """An empty label (the configuration's pattern lets `etcd..example` through) is a name that
    cannot be resolved, not an endpoint that answered malformed HTTP."""
    c = EtcdClient(EtcdSettings(("http://etcd..example:2379",), timeout=0.3))
    with pytest.raises(DatastoreUnavailable) as exc:
        c.get("/calico/a")
    assert "Endpoint(http://etcd..example:2379): cannot resolve etcd..example: not a valid host name" in exc.value.details, exc.value.details


def test_a_name_whose_lookup_hangs_ends_at_the_deadline(tmp_path):
    """The C resolver waits out its own timeouts (5 s here), longer than the call's deadline of 1 s,
    which the call keeps as over gRPC. Run in a mount namespace of its own whose resolv.conf names
    a server that never answers (the machine's own resolv.conf is left alone)."""
    dns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    dns.bind((FABRIC_ADDRESS, 53))
    resolv = tmp_path / "resolv.conf"
    resolv.write_text(f"nameserver {FABRIC_ADDRESS}\noptions timeout:5 attempts:1\n")
    code = (
        "import time\n"
        "from calico_cni.config import EtcdSettings\n"
        "from calico_cni.datastore.errors import DatastoreUnavailable\n"
        "from calico_cni.datastore.etcd import EtcdClient\n"
        "c = EtcdClient(EtcdSettings(('http://etcd.calico-test.invalid:2379',), timeout=1))\n"
        "start = time.monotonic()\n"
        "try:\n"
        "    c.get('/calico/a')\n"
        "except DatastoreUnavailable as exc:\n"
        "    print(round(time.monotonic() - start, 2), exc.details)\n"
    )
    try:
        out = subprocess.run(
            ["unshare", "-m", "sh", "-c", 'mount --bind "$0" /etc/resolv.conf && exec "$1" -c "$2"', str(resolv), sys.executable, code],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        dns.settimeout(0)
        assert b"calico-test" in dns.recv(512), "the lookup did not ask the silent server"
    finally:
        dns.close()
    took, _, details = out.stdout.partition(" ")
    assert float(took) < 1.6, out.stdout
    assert "Endpoint(http://etcd.calico-test.invalid:2379): Deadline Exceeded" in details, details


def test_an_http_server_that_is_not_etcd_is_a_down_endpoint():
    other = Listener(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello")
    try:
        c = EtcdClient(EtcdSettings((other.endpoint,), timeout=1))
        with pytest.raises(DatastoreUnavailable) as exc:
            c.get("/calico/a")
        assert "HTTP 200 from an endpoint that is not etcd's gateway: hello" in exc.value.details
        assert c.uses_gateway
    finally:
        other.close()


def test_a_kept_connection_the_server_closed_is_made_again_not_failed():
    """A server that closes each connection after its answer without saying so (as one whose
    idle timeout ran out): the next request finds its kept connection closed before any byte of
    the answer, and is sent once more on a new connection, without failing the endpoint."""
    body = json.dumps({"header": {"revision": "9"}}).encode()
    server = Listener(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body), close_after=True)
    try:
        c = EtcdClient(EtcdSettings((server.endpoint,), timeout=2))
        start = time.monotonic()
        for _ in range(3):
            assert c.get("/calico/a") is None
        assert time.monotonic() - start < 0.4  # no endpoint failed (it would be skipped 0.5 s)
        assert c.round_trips == 3 and len(server.requests) == len(server.conns) == 3
        c.close()
    finally:
        server.close()


def test_connection_close_and_chunked_answers_are_read():
    """An answer with Connection: close is read and its connection not kept; a chunked answer
    with trailers (etcd's error answers are) is read whole; a malformed one is a down endpoint."""
    kv = {"key": "L2NhbGljby9h", "value": "MQ==", "mod_revision": "7", "create_revision": "5", "version": "3"}
    body = json.dumps({"header": {"revision": "9"}, "kvs": [kv], "count": "1"}).encode()
    closing = Listener(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
    half = len(body) // 2
    chunked = Listener(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n%x;ext=1\r\n%s\r\n0\r\nGrpc-Trailer-X: y\r\n\r\n"
        % (half, body[:half], len(body) - half, body[half:])
    )
    malformed = Listener(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n")
    try:
        for server in (closing, chunked):
            c = EtcdClient(EtcdSettings((server.endpoint,), timeout=2))
            assert c.get("/calico/a") == c.get("/calico/a")
            got = c.get("/calico/a")
            assert (got.key, got.value, got.mod_revision, got.create_revision, got.version) == ("/calico/a", b"1", 7, 5, 3)
            assert c.round_trips == 3
            # Kept only when the server keeps it (the chunked server does).
            assert (c._gateway[0].connection is None) == (server is closing)
            c.close()
        assert len(closing.conns) == 3  # one connection per request
        c = EtcdClient(EtcdSettings((malformed.endpoint,), timeout=0.5))
        with pytest.raises(DatastoreUnavailable) as exc:
            c.get("/calico/a")
        assert "the endpoint answered malformed HTTP" in exc.value.details
    finally:
        for server in (closing, chunked, malformed):
            server.close()


# -- the switch to gRPC ---------------------------------------------------------------------------------


def test_a_404_on_the_gateways_path_switches_the_client_to_grpc():
    """A plain HTTP server answering 404: the client takes it for an etcd without the gateway and
    uses gRPC (which then finds no etcd there either)."""
    plain = Listener(b"HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\nContent-Length: 9\r\n\r\nNot Found")
    try:
        c = EtcdClient(EtcdSettings((plain.endpoint,), timeout=1))
        with pytest.raises(DatastoreUnavailable):
            c.get("/calico/a")
        assert not c.uses_gateway
        # One gateway request, then gRPC only (its connection preface is "PRI * HTTP/2.0").
        assert [r for r in plain.requests if r.endswith("HTTP/1.1")] == ["POST /v3/kv/range HTTP/1.1"]
        assert "PRI * HTTP/2.0" in plain.requests
        c.close()
    finally:
        plain.close()


def test_an_etcd_without_the_gateway_is_used_over_grpc(fabric, tmp_path):
    cluster = etcd_secure.start_single(FABRIC_ADDRESS, GATEWAY_OFF_PORT, GATEWAY_OFF_PORT + 1, str(tmp_path), extra=["--enable-grpc-gateway=false"])
    try:
        c = EtcdClient(EtcdSettings((cluster.endpoint,)))
        assert c.commit([Compare("/calico/a", 0)], [("/calico/a", b"1")])[0]
        assert not c.uses_gateway and c._client is not None
        assert c.get("/calico/a").value == b"1"
        assert c.round_trips == 3  # the 404, the commit over gRPC, the read
        c.close()
    finally:
        cluster.stop()


def test_lease_and_streams_switch_to_grpc(etcd_endpoint):
    c = EtcdClient(EtcdSettings((etcd_endpoint,)))
    c.commit([], [("/calico/a", b"1")])
    assert c.uses_gateway
    leased = c.lease()
    assert not c.uses_gateway and not leased.uses_gateway
    assert leased.get("/calico/a").value == b"1" and c.get("/calico/a").value == b"1"
    assert c._gateway is False
    leased.close()
    c.close()


# -- authentication and TLS -------------------------------------------------------------------------------


def test_authentication_and_a_renewed_token_over_the_gateway(auth_etcd):
    c = EtcdClient(EtcdSettings((auth_etcd.endpoint,), username="calico", password=PASSWORD, timeout=5))
    try:
        assert c.commit([], [("/calico/g", b"1")])[0]
        assert c.authentications == 1 and c.uses_gateway
        time.sleep(TOKEN_TTL * 3)  # the simple token expires unused
        assert c.get("/calico/g").value == b"1"
        assert c.authentications == 2 and c.uses_gateway
        with pytest.raises(DatastoreRequestFailed) as exc:
            c.get("/outside")
        assert exc.value.msg == "etcd denied the request (permission denied for etcd user 'calico')"
        bad = EtcdClient(EtcdSettings((auth_etcd.endpoint,), username="calico", password="wrong", timeout=5))
        with pytest.raises(DatastoreCredentialsError) as exc:
            bad.get("/calico/g")
        assert exc.value.msg == "etcd refused the user name or password of etcd user 'calico'"
        anonymous = EtcdClient(EtcdSettings((auth_etcd.endpoint,), timeout=5))
        with pytest.raises(DatastoreCredentialsError) as exc:
            anonymous.get("/calico/g")
        assert exc.value.msg == "etcd requires authentication and no etcd user is configured"
    finally:
        c.close()


def test_https_with_a_user_name_uses_the_gateway_and_without_one_grpc(tls_etcd, pki):
    cert, key = pki["client"]
    # tls_etcd has authentication off: the client learns it from Authenticate and sends no token.
    named = EtcdClient(EtcdSettings((tls_etcd.endpoint,), pki["ca"], cert, key, username="calico", password="x"))
    assert named.uses_gateway
    assert named.commit([], [("/calico/tls", b"1")])[0]
    assert named.get("/calico/tls").value == b"1" and named._client is None
    named.close()
    anonymous = EtcdClient(EtcdSettings((tls_etcd.endpoint,), pki["ca"], cert, key))
    assert not anonymous.uses_gateway
    assert anonymous.get("/calico/tls").value == b"1"
    anonymous.close()


@pytest.mark.parametrize("case", ["rogue", "expired", "untrusted-server"])
def test_tls_problems_over_the_gateway_are_diagnosed_as_over_grpc(tls_etcd, pki, case):
    cert, key = pki["rogue"] if case == "rogue" else pki["expired"] if case == "expired" else pki["client"]
    ca = pki["rogue_ca"] if case == "untrusted-server" else pki["ca"]
    errors = []
    for username in ("calico", None):
        c = EtcdClient(EtcdSettings((tls_etcd.endpoint,), ca, cert, key, username=username, password="x" if username else None, timeout=2))
        assert c.uses_gateway == bool(username)
        with pytest.raises(DatastoreCredentialsError) as exc:
            c.get("/calico/a")
        errors.append(exc.value.msg)
        c.close()
    assert errors[0] == errors[1], errors


def test_plain_http_to_a_tls_etcd_says_to_use_https(tls_etcd):
    endpoint = tls_etcd.endpoint.replace("https://", "http://")
    c = EtcdClient(EtcdSettings((endpoint,), timeout=1))
    with pytest.raises(DatastoreUnavailable) as exc:
        c.get("/calico/a")
    assert "(if etcd serves TLS there, use an https:// endpoint)" in exc.value.details, exc.value.details


def test_https_to_a_plain_etcd_with_a_user_name_says_it_does_not_speak_tls(etcd_endpoint, pki):
    cert, key = pki["client"]
    endpoint = etcd_endpoint.replace("http://", "https://")
    c = EtcdClient(EtcdSettings((endpoint,), pki["ca"], cert, key, username="calico", password="x", timeout=2))
    assert c.uses_gateway
    with pytest.raises(DatastoreCredentialsError) as exc:
        c.get("/calico/a")
    assert exc.value.msg == f"etcd at {endpoint} does not speak TLS"
