"""etcd's gRPC JSON gateway as a transport for the few unary calls a one-shot client makes.

Every etcd v3.4+ serves, on its client URL, an HTTP/1.1 gateway to its gRPC API (unless started
with `--enable-grpc-gateway=false`): `POST /v3/kv/range`, `/v3/kv/txn`, `/v3/auth/authenticate`
with the request message as protojson (bytes in base64, int64 as decimal strings, enums by name,
fields at their default value left out of answers), the auth token in the `Authorization` header,
and a failure answered with an HTTP status and `{"error", "message", "code": <gRPC code number>}`.

Why by hand: an exec'd plugin pays for every import. gRPC, pyetcd and protobuf cost about 48 ms
to import and `http.client` about 20 ms (it imports `email`); this module needs only `_socket`
(the `socket` module costs about 3 ms more), `json` and `base64` (loaded by the plugin already) and
`ssl` for https endpoints. It speaks just the HTTP/1.1 this needs: one keep-alive connection per
endpoint, a Content-Length request, an answer with Content-Length, chunked (etcd's error answers
carry trailers) or read to the end, and `Connection: close` honoured.

The client (`datastore.etcd.EtcdClient`) keeps the retry, failover and authentication logic; a
failed exchange is raised here as `GatewayFailure` carrying the gRPC status code's name, so
`datastore.failures` classifies it exactly as it classifies gRPC's.
"""

from __future__ import annotations

import _socket
import _thread
import base64
import json
import time
from typing import Callable

from calico_cni.datastore import failures

RANGE = "/v3/kv/range"
TXN = "/v3/kv/txn"
AUTHENTICATE = "/v3/auth/authenticate"

# An answer larger than this is not etcd's gateway answering a Calico request.
_MAX_HEADER_LINE = 64 * 1024
_RECV = 256 * 1024


class GatewayFailure(Exception):
    """One exchange failed: `code` is the gRPC status code's name (UNAVAILABLE and
    DEADLINE_EXCEEDED when the endpoint did not answer), `detail` etcd's or the socket's text."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail


class GatewayOff(Exception):
    """The endpoint answered the gateway's path with a plain 404: etcd runs with
    `--enable-grpc-gateway=false` (or it is not etcd); use gRPC."""


class NoEndpoint(Exception):
    """Every endpoint failed moments ago (each is retried `time_retry` seconds after it failed)."""


class Endpoint:
    """One etcd client URL, failed and retried as pyetcd's `Endpoint` is (same text in messages)."""

    def __init__(self, secure: bool, host: str, port: int, time_retry: float) -> None:
        self.secure = secure
        self.host = host.strip("[]")
        self.port = port
        self.netloc = f"{host}:{port}"
        self.protocol = "https" if secure else "http"
        self.time_retry = time_retry
        self.last_failed = 0.0
        # The idle keep-alive connection (the client takes it for an exchange and puts it back).
        self.connection: _Connection | None = None
        # The host name's lookup while it runs: (a lock released when done, [addresses or error]).
        self.lookup: tuple | None = None

    def fail(self) -> None:
        """Mark the endpoint failed: it is skipped for `time_retry` seconds, its connection closed."""
        self.last_failed = time.time()
        self.drop()

    def is_failed(self) -> bool:
        """True for `time_retry` seconds after `fail`."""
        return time.time() - self.last_failed < self.time_retry

    def drop(self) -> None:
        """Close the keep-alive connection, if any."""
        conn, self.connection = self.connection, None
        if conn is not None:
            conn.close()

    def __str__(self) -> str:
        return f"Endpoint({self.protocol}://{self.netloc})"


class _Connection:
    """One HTTP/1.1 connection with a receive buffer; every blocking step is bounded by `end`."""

    def __init__(self, sock) -> None:
        self.sock = sock
        self.buf = bytearray()
        # Whether any byte of the current answer came: a kept connection the server closed while
        # idle fails before that, and only then is the request sent again on a new connection.
        self.answered = False

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def _fill(self, end: float) -> None:
        left = end - time.monotonic()
        if left <= 0:
            raise TimeoutError("timed out")
        self.sock.settimeout(left)
        data = self.sock.recv(_RECV)
        if not data:
            raise _Closed()
        self.answered = True
        self.buf += data

    def line(self, end: float) -> bytes:
        while True:
            i = self.buf.find(b"\r\n")
            if i >= 0:
                out = bytes(self.buf[:i])
                del self.buf[: i + 2]
                return out
            if len(self.buf) > _MAX_HEADER_LINE:
                raise GatewayFailure("UNAVAILABLE", "the endpoint answered with an overlong line: not etcd's gateway")
            self._fill(end)

    def exact(self, n: int, end: float) -> bytes:
        while len(self.buf) < n:
            self._fill(end)
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def to_close(self, end: float) -> bytes:
        try:
            while True:
                self._fill(end)
        except _Closed:
            pass
        out = bytes(self.buf)
        self.buf.clear()
        return out


class _Closed(Exception):
    """The server closed the connection."""


def _connect(endpoint: Endpoint, end: float, tls_context: Callable[[], object] | None) -> _Connection:
    """A new connection to the endpoint (TLS when it is https), within `end`."""
    last: OSError | None = None
    for family, kind, proto, _, address in _addresses(endpoint, end):
        sock = _socket.socket(family, kind, proto)
        try:
            left = end - time.monotonic()
            if left <= 0:
                raise TimeoutError("timed out")
            sock.settimeout(left)
            sock.setsockopt(_socket.IPPROTO_TCP, _socket.TCP_NODELAY, 1)
            sock.connect(address)
        except OSError as exc:
            sock.close()
            if isinstance(exc, TimeoutError):
                raise
            last = exc
            continue
        if endpoint.secure and tls_context is not None:
            try:
                sock = tls_context().wrap_socket(sock, server_hostname=endpoint.host)
            except TimeoutError:
                sock.close()
                raise
            except OSError as exc:
                sock.close()
                # The text names TLS, so the client diagnoses the TLS setup (`tls.diagnose_tls`).
                raise GatewayFailure("UNAVAILABLE", f"TLS handshake failed: {_describe(exc)}") from None
        return _Connection(sock)
    raise last or OSError(f"no address for {endpoint.host}")


def _addresses(endpoint: Endpoint, end: float) -> list:
    """The endpoint's addresses, within `end`. A name is looked up on a thread of its own that is
    left behind at `end`: the C resolver waits out its own timeouts (5 s per server and try by
    default), longer than an ADD's deadline, which gRPC's resolver keeps. A lookup still running
    is waited for again by the next attempt rather than started twice."""
    host, port = endpoint.host, endpoint.port
    try:
        return _socket.getaddrinfo(host, port, 0, _socket.SOCK_STREAM, 0, _socket.AI_NUMERICHOST)
    except UnicodeError:
        # An empty or over-long label (`etcd..example`, which the configuration's pattern lets
        # through): said here, or `exchange` would take this ValueError for malformed HTTP.
        raise GatewayFailure("UNAVAILABLE", f"cannot resolve {host}: not a valid host name") from None
    except OSError:
        pass  # a name, not an address
    lookup = endpoint.lookup
    if lookup is None:
        done = _thread.allocate_lock()
        done.acquire()
        box: list = []

        def look_up() -> None:
            try:
                box.append(_socket.getaddrinfo(host, port, 0, _socket.SOCK_STREAM))
            except BaseException as exc:  # noqa: BLE001 - raised again by the attempt that waits
                box.append(exc)
            finally:
                done.release()

        endpoint.lookup = lookup = (done, box)
        _thread.start_new_thread(look_up, ())
    done, box = lookup
    if not done.acquire(True, max(end - time.monotonic(), 0)):
        raise TimeoutError("timed out")
    done.release()
    # Finished: the next connection looks the name up again (etcd's addresses may change).
    endpoint.lookup = None
    if isinstance(box[0], BaseException):
        raise box[0]
    return box[0]


def _describe(exc: OSError) -> str:
    """An OSError in a few words, as the detail of an UNAVAILABLE failure."""
    return exc.strerror or str(exc) or type(exc).__name__


def exchange(
    endpoint: Endpoint, conn: _Connection | None, path: str, body: dict, token: str | None, timeout: float, tls_context: Callable[[], object] | None = None
) -> tuple[dict, _Connection | None]:
    """POST `body` as JSON to `path` on `endpoint`, on `conn` (an idle keep-alive connection to
    it) or a new connection, all within `timeout` seconds. Returns the decoded answer and the
    connection to keep for the next exchange (None when the server closes it). Raises
    `GatewayFailure` (with a gRPC code name) for every failure and `GatewayOff` when the endpoint
    does not serve the gateway; the connection is closed then. `tls_context` makes the
    `ssl.SSLContext` for https endpoints."""
    end = time.monotonic() + timeout
    payload = json.dumps(body, separators=(",", ":")).encode()
    head = f"POST {path} HTTP/1.1\r\nHost: {endpoint.netloc}\r\nContent-Type: application/json\r\nContent-Length: {len(payload)}\r\n"
    if token:
        head += f"Authorization: {token}\r\n"
    request = head.encode() + b"\r\n" + payload
    while True:
        reused = conn is not None
        try:
            if conn is None:
                conn = _connect(endpoint, end, tls_context)
            left = end - time.monotonic()
            if left <= 0:
                raise TimeoutError("timed out")
            conn.answered = False
            conn.sock.settimeout(left)
            conn.sock.sendall(request)
            status, close, data = _response(conn, end)
            answer = _answer(status, data)
        except TimeoutError:
            _close(conn)
            raise GatewayFailure("DEADLINE_EXCEEDED", "Deadline Exceeded") from None
        except (_Closed, ConnectionResetError, BrokenPipeError) as exc:
            _close(conn)
            if reused and not conn.answered:
                conn = None
                continue  # closed while idle between two requests: once more on a new connection
            # gRPC's words: `failures.unreachable` then suggests https when the endpoint is http://
            # (etcd's TLS port answers plain HTTP with a 400 and closes, often resetting first).
            detail = "Socket closed" if isinstance(exc, _Closed) else f"Socket closed: {_describe(exc)}"
            if endpoint.secure:
                # TLS 1.3: a refused client certificate closes the connection after the handshake.
                detail = f"TLS connection closed by the server: {detail}"
            raise GatewayFailure("UNAVAILABLE", detail) from None
        except (GatewayFailure, GatewayOff):
            _close(conn)
            raise
        except ValueError:
            _close(conn)
            # A length or chunk size that is not a number: not etcd's gateway answering.
            raise GatewayFailure("UNAVAILABLE", "the endpoint answered malformed HTTP: not etcd's gateway") from None
        except OSError as exc:
            _close(conn)
            detail = _describe(exc)
            if type(exc).__module__ == "ssl":
                # ssl.SSLError is an OSError: its text names SSL, so the client diagnoses the TLS setup.
                detail = f"SSL error: {detail}"
            raise GatewayFailure("UNAVAILABLE", detail) from None
        if close:
            conn.close()
            conn = None
        return answer, conn


def _close(conn: _Connection | None) -> None:
    if conn is not None:
        conn.close()


def _response(conn: _Connection, end: float) -> tuple[int, bool, bytes]:
    """Read one answer: (status, whether the server closes the connection, body)."""
    status_line = conn.line(end)
    version, _, rest = status_line.partition(b" ")
    code = rest[:3]
    if not version.startswith(b"HTTP/") or not code.isdigit():
        raise GatewayFailure("UNAVAILABLE", "the endpoint does not answer HTTP: not etcd's gateway")
    status = int(code)
    headers: dict[bytes, bytes] = {}
    while True:
        line = conn.line(end)
        if not line:
            break
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    connection = headers.get(b"connection", b"").lower()
    close = connection == b"close" or (version == b"HTTP/1.0" and connection != b"keep-alive")
    if b"chunked" in headers.get(b"transfer-encoding", b"").lower():
        parts = []
        while True:
            size = int(conn.line(end).partition(b";")[0].strip() or b"0", 16)
            if size == 0:
                while conn.line(end):  # trailers (etcd sends Grpc-Trailer-*), then the blank line
                    pass
                break
            parts.append(conn.exact(size, end))
            conn.exact(2, end)
        return status, close, b"".join(parts)
    if b"content-length" in headers:
        return status, close, conn.exact(int(headers[b"content-length"]), end)
    if status in (204, 304) or 100 <= status < 200:
        return status, close, b""
    return status, True, conn.to_close(end)


def _answer(status: int, data: bytes) -> dict:
    """The decoded answer, or the failure it reports."""
    try:
        decoded = json.loads(data) if data else None
    except ValueError:
        decoded = None
    if status == 200 and isinstance(decoded, dict):
        return decoded
    if isinstance(decoded, dict) and isinstance(decoded.get("code"), int):
        detail = decoded.get("message") or decoded.get("error") or f"HTTP {status}"
        raise GatewayFailure(failures.code_name(decoded["code"]), str(detail))
    if status == 404:
        raise GatewayOff()
    # Not the gateway's JSON: another HTTP server, or plain HTTP sent to etcd's TLS port (Go
    # answers "Client sent an HTTP request to an HTTPS server."). Like gRPC, treat the endpoint as
    # down; the text is kept for the message.
    text = data[:200].decode("utf-8", "replace").strip()
    raise GatewayFailure("UNAVAILABLE", f"HTTP {status} from an endpoint that is not etcd's gateway" + (f": {text}" if text else ""))


# -- protojson <-> etcd's messages -----------------------------------------------------------------


def b64(data: bytes) -> str:
    """A bytes field as protojson writes it."""
    return base64.b64encode(data).decode("ascii")


def range_request(key: bytes, range_end: bytes | None = None, keys_only: bool = False, revision: int = 0) -> dict:
    """etcdserverpb.RangeRequest as protojson."""
    out: dict = {"key": b64(key)}
    if range_end is not None:
        out["range_end"] = b64(range_end)
    if keys_only:
        out["keys_only"] = True
    if revision:
        out["revision"] = str(revision)
    return out


def compare(key: bytes, range_end: bytes | None, result: str, target: str, value: int) -> dict:
    """etcdserverpb.Compare on VERSION or MOD (`value` is the version or the mod_revision)."""
    out: dict = {"key": b64(key), "result": result, "target": target, "version" if target == "VERSION" else "mod_revision": str(value)}
    if range_end is not None:
        out["range_end"] = b64(range_end)
    return out


def put(key: bytes, value: bytes) -> dict:
    """A RequestOp putting `value` at `key`."""
    return {"request_put": {"key": b64(key), "value": b64(value)}}


def delete(key: bytes) -> dict:
    """A RequestOp deleting `key`."""
    return {"request_delete_range": {"key": b64(key)}}


def key_value(kv: dict) -> tuple[str, bytes, int, int, int]:
    """(key, value, mod_revision, create_revision, version) of an mvccpb.KeyValue as protojson
    (fields at their default value are absent: a keys-only read has no value)."""
    return (
        base64.b64decode(kv["key"]).decode(),
        base64.b64decode(kv["value"]) if "value" in kv else b"",
        int(kv.get("mod_revision", 0)),
        int(kv.get("create_revision", 0)),
        int(kv.get("version", 0)),
    )


def revision(resp: dict) -> int:
    """The store revision in an answer's header."""
    return int(resp.get("header", {}).get("revision", 0))
