"""etcd v3 connection: every call has a deadline, fails over between endpoints, and maps failures
to CNI errors (11 "try again later" when etcd cannot be reached).

Built on `pyetcd` (package etcd-sdk-python) for the gRPC channels and protobuf messages; the
client is created lazily so verbs that never touch etcd do not pay for importing gRPC.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from typing import Iterable, Sequence

from calico_cni.timing import timed
from calico_cni.config import EtcdSettings, read_regular_file
from calico_cni.protocol.errors import INVALID_CONFIG, IO_FAILURE, TRY_AGAIN_LATER, CniError

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class KeyValue:
    """One etcd key as read: value bytes and its revisions (mod_revision is the CAS token)."""

    key: str
    value: bytes
    mod_revision: int
    create_revision: int
    version: int


@dataclass(frozen=True)
class Range:
    """One read in a batched `read`: a single key, or every key under a prefix."""

    key: str
    prefix: bool = False
    keys_only: bool = False


@dataclass(frozen=True)
class Compare:
    """A CAS condition: the key's mod_revision equals `mod_revision` (0: the key must not exist).

    With `prefix`, the condition is instead that no key under the prefix has a mod_revision
    greater than `mod_revision` (nothing there was created or changed since that revision).
    """

    key: str
    mod_revision: int
    prefix: bool = False


class DatastoreUnavailable(CniError):
    """etcd could not be reached before the deadline (CNI error 11)."""

    def __init__(self, endpoints: Sequence[str], detail: str) -> None:
        super().__init__(
            TRY_AGAIN_LATER,
            "etcd is unreachable at " + ", ".join(endpoints) + "; try again later",
            detail,
        )


class DatastoreCredentialsError(CniError):
    """etcd refused our credentials (TLS client certificate, user name or password), or the TLS
    files are unusable. Not "try again later": the configuration must change (CNI error 7).
    Messages name the setting and the file, never a secret."""

    def __init__(self, msg: str, details: str = "") -> None:
        super().__init__(INVALID_CONFIG, msg, details)


def _prefix_end(prefix: bytes) -> bytes:
    """The range_end that selects every key starting with `prefix`."""
    s = bytearray(prefix)
    for i in reversed(range(len(s))):
        if s[i] < 0xFF:
            s[i] += 1
            return bytes(s[: i + 1])
    return b"\0"


def _split_endpoint(url: str) -> tuple[bool, str, int]:
    scheme, _, rest = url.partition("://")
    rest = rest.rstrip("/")
    host, _, port = rest.rpartition(":")
    if not host or not port.isdigit():
        host, port = rest, "2379"
    return scheme == "https", host, int(port)


# Where a file setting can come from (config key/environment variable), for messages.
_TLS_SETTINGS = {
    "ca": "etcd_ca_cert_file/ETCD_CA_CERT_FILE",
    "cert": "etcd_cert_file/ETCD_CERT_FILE",
    "key": "etcd_key_file/ETCD_KEY_FILE",
}
# Fragments of gRPC status details that point at the TLS layer rather than a dead endpoint.
_TLS_MARKERS = ("ssl", "tls", "tsi_", "handshake", "certificate")
# etcd 3.4 status details (etcdserver/api/v3rpc/rpctypes) that mean "authenticate again".
_REAUTH_MARKERS = ("invalid auth token", "auth store is old", "revision of auth store is old")


def _file_problem(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__


def load_tls_credentials(settings: EtcdSettings):
    """Read and check the TLS files (CA, client certificate and key) and return gRPC channel
    credentials. Every problem is a DatastoreCredentialsError naming the setting and the file."""
    import ssl

    import grpc

    s = settings
    if bool(s.cert_file) != bool(s.key_file):
        have, missing = ("cert", "key") if s.cert_file else ("key", "cert")
        raise DatastoreCredentialsError(
            f"{_TLS_SETTINGS[have]} is set but {_TLS_SETTINGS[missing]} is not",
            "a client certificate needs its private key, and the key its certificate",
        )
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    data: dict[str, bytes | None] = {"ca": None, "cert": None, "key": None}
    for which, path in (("ca", s.ca_cert_file), ("cert", s.cert_file), ("key", s.key_file)):
        if not path:
            continue
        try:
            data[which] = read_regular_file(path, 1024 * 1024 + 1)
        except OSError as exc:
            raise DatastoreCredentialsError(f"cannot read {_TLS_SETTINGS[which]} {path}: {_file_problem(exc)}") from None
        if len(data[which]) > 1024 * 1024:
            raise DatastoreCredentialsError(f"{_TLS_SETTINGS[which]} {path} is not a PEM file", "it is larger than 1 MiB")
    if s.key_file:
        try:
            mode = os.stat(s.key_file).st_mode
        except OSError:
            mode = 0
        if mode & 0o077:
            log.warning("etcd_key_file %s can be read by other users (mode %03o): chmod 600 it", s.key_file, mode & 0o777)
    if data["ca"] is not None:
        try:
            ctx.load_verify_locations(cadata=data["ca"].decode("ascii", "replace"))
        except (ssl.SSLError, ValueError) as exc:
            raise DatastoreCredentialsError(
                f"{_TLS_SETTINGS['ca']} {s.ca_cert_file} holds no usable CA certificate", f"expected PEM certificates: {exc}"
            ) from None
    if data["cert"] is not None:

        def no_passphrase() -> bytes:
            raise ValueError("the key is encrypted")

        try:
            ctx.load_cert_chain(s.cert_file, s.key_file, password=no_passphrase)
        except (ssl.SSLError, ValueError, OSError) as exc:
            reason = getattr(exc, "reason", None) or str(exc)
            if "encrypted" in str(exc) or "BAD_DECRYPT" in str(reason).upper():
                hint = "the key is protected by a passphrase; etcd clients need an unencrypted key (chmod 600 it instead)"
            elif "KEY_VALUES_MISMATCH" in str(reason).upper():
                hint = "the key does not belong to the certificate"
            else:
                hint = f"expected a PEM certificate and its PEM private key ({reason})"
            raise DatastoreCredentialsError(
                f"cannot use the etcd client certificate {s.cert_file} with key {s.key_file}", hint
            ) from None
    try:
        return grpc.ssl_channel_credentials(data["ca"], data["key"], data["cert"])
    except Exception as exc:  # noqa: BLE001 - gRPC's own check of the same files
        raise DatastoreCredentialsError("gRPC refused the etcd TLS files", str(exc)[:200]) from None


def _cert_expiry(path: str) -> str | None:
    """'expired on <date>' when the PEM certificate at `path` is out of its validity period."""
    import ssl

    try:
        info = ssl._ssl._test_decode_cert(path)  # noqa: SLF001 - the stdlib's only certificate parser
        not_after = ssl.cert_time_to_seconds(info["notAfter"])
        not_before = ssl.cert_time_to_seconds(info["notBefore"])
    except Exception:  # noqa: BLE001 - a diagnostic only
        return None
    now = time.time()
    if now > not_after:
        return f"it expired on {info['notAfter']}"
    if now < not_before:
        return f"it is not valid before {info['notBefore']}"
    return None


def _answers_plain_http(host: str, port: int, timeout: float) -> bool:
    """True when the endpoint answers a plain HTTP request as plain HTTP (a TLS server built with
    Go answers with a 400 saying the client spoke HTTP to an HTTPS server)."""
    import socket

    try:
        with socket.create_connection((host, port), timeout=timeout) as raw:
            raw.settimeout(timeout)
            raw.sendall(b"GET /version HTTP/1.1\r\nHost: etcd\r\nConnection: close\r\n\r\n")
            reply = b""
            while len(reply) < 512:
                chunk = raw.recv(512)
                if not chunk:
                    break
                reply += chunk
    except OSError:
        return False
    return reply.startswith(b"HTTP/") and b"HTTPS server" not in reply


def diagnose_tls(settings: EtcdSettings, host: str, port: int, timeout: float) -> CniError | None:
    """After gRPC reported a TLS-level failure (its own details are often just "TSI_DATA_CORRUPTED"),
    repeat the handshake with Python's ssl module to learn what is wrong. Returns the error to
    report, or None when the handshake works or the endpoint is simply unreachable."""
    import socket
    import ssl

    s = settings
    endpoint = f"https://{host}:{port}"
    host = host.strip("[]")
    try:
        ctx = ssl.create_default_context(cafile=s.ca_cert_file) if s.ca_cert_file else ssl.create_default_context()
        if s.cert_file and s.key_file:
            ctx.load_cert_chain(s.cert_file, s.key_file)
        ctx.set_alpn_protocols(["h2"])
    except Exception:  # noqa: BLE001 - the files were checked before; a diagnostic only
        return None
    if _answers_plain_http(host, port, max(min(timeout, 2.0), 0.1)):
        return DatastoreCredentialsError(
            f"etcd at {endpoint} does not speak TLS",
            "it answers plain HTTP; use an http:// endpoint, or configure etcd with --cert-file and --key-file",
        )
    try:
        with socket.create_connection((host, port), timeout=max(min(timeout, 2.0), 0.1)) as raw:
            with ctx.wrap_socket(raw, server_hostname=host, do_handshake_on_connect=False) as tls:
                try:
                    tls.do_handshake()
                except (ssl.SSLEOFError, ConnectionResetError):
                    return DatastoreCredentialsError(
                        f"etcd at {endpoint} does not speak TLS",
                        "it closed the connection during the TLS handshake; use an http:// endpoint, "
                        "or configure etcd with --cert-file and --key-file",
                    )
                # TLS 1.3: the server checks the client certificate after our handshake is done
                # and answers the first read with an alert.
                tls.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
                if not tls.recv(9):
                    raise ssl.SSLEOFError("closed by the server")
        return None
    except ssl.SSLCertVerificationError as exc:
        trusted = f"the CA in {_TLS_SETTINGS['ca']} {s.ca_cert_file}" if s.ca_cert_file else "the system's CAs (etcd_ca_cert_file is not set)"
        return DatastoreCredentialsError(
            f"the certificate of etcd at {endpoint} is not trusted: {exc.verify_message}",
            f"it was checked against {trusted}; the server certificate must be signed by that CA and name {host}",
        )
    except ssl.SSLError as exc:
        reason = (exc.reason or str(exc)).upper()
        said = "the server closed the connection" if isinstance(exc, ssl.SSLEOFError) else (exc.reason or str(exc))
        if "WRONG_VERSION_NUMBER" in reason or "RECORD_LAYER" in reason or "PACKET_LENGTH_TOO_LONG" in reason:
            return DatastoreCredentialsError(
                f"etcd at {endpoint} does not speak TLS", "use an http:// endpoint, or configure etcd with --cert-file and --key-file"
            )
        if not s.cert_file:
            return DatastoreCredentialsError(
                f"etcd at {endpoint} requires a client certificate and none is configured",
                f"set {_TLS_SETTINGS['cert']} and {_TLS_SETTINGS['key']} (TLS said: {said})",
            )
        expiry = _cert_expiry(s.cert_file)
        return DatastoreCredentialsError(
            f"etcd at {endpoint} rejected the client certificate {s.cert_file} ({_TLS_SETTINGS['cert']})"
            + (f": {expiry}" if expiry else ""),
            "it must be signed by a CA that etcd trusts (--trusted-ca-file) and be valid now"
            + f"; TLS said: {said}",
        )
    except (ConnectionResetError, BrokenPipeError) as exc:
        if not s.cert_file:
            return DatastoreCredentialsError(
                f"etcd at {endpoint} requires a client certificate and none is configured",
                f"set {_TLS_SETTINGS['cert']} and {_TLS_SETTINGS['key']} ({exc})",
            )
        return DatastoreCredentialsError(
            f"etcd at {endpoint} rejected the client certificate {s.cert_file} ({_TLS_SETTINGS['cert']})",
            f"the server closed the connection during the TLS handshake ({exc})",
        )
    except OSError:
        return None


class _AuthNotEnabled(Exception):
    """Authenticate was answered with "authentication is not enabled"."""


class EtcdClient:
    """A deadline-bound etcd v3 client over one or more endpoints.

    Security behaviour: with https endpoints the TLS files are checked before the first call and a
    certificate problem is reported as error 7 naming the file, not retried as "try again later";
    with a user name, the client authenticates once and authenticates again whenever etcd says
    its token is invalid or stale (expired simple token, etcd restarted), once per call.
    """

    # How long a failed endpoint is skipped before it is tried again.
    ENDPOINT_RETRY = 0.5

    def __init__(self, settings: EtcdSettings) -> None:
        self.settings = settings
        self._client = None
        self._rpc = None
        self._grpc = None
        # gRPC stubs by (service, channel): built once per endpoint, not per call.
        self._stubs: dict = {}
        # None: not authenticated yet; "": etcd has authentication disabled (no token needed).
        self._token: str | None = None
        self.round_trips = 0
        self.authentications = 0
        # When set (time.monotonic()), no call of this client runs past it: a whole operation
        # (an ADD) is bounded, not just each call.
        self.deadline_at: float | None = None

    # -- connection ---------------------------------------------------------------------------

    @timed("etcd_connect")  # the first call imports gRPC and pyetcd
    def _connect(self):
        if self._client is not None:
            return self._client
        # gRPC's C core prints its own TLS diagnostics on stderr; ours are in the CNI error.
        os.environ.setdefault("GRPC_VERBOSITY", "NONE")
        import grpc
        import pyetcd
        from pyetcd import etcdrpc

        self._grpc, self._rpc = grpc, etcdrpc
        s = self.settings
        creds = None
        if any(e.startswith("https://") for e in s.endpoints):
            creds = load_tls_credentials(s)
        endpoints = []
        for url in s.endpoints:
            secure, host, port = _split_endpoint(url)
            endpoints.append(
                pyetcd.Endpoint(host, port, secure=secure, creds=creds if secure else None, time_retry=self.ENDPOINT_RETRY)
            )
        self._client = pyetcd.MultiEndpointEtcd3Client(endpoints=endpoints, timeout=s.timeout, failover=True)
        return self._client

    def close(self) -> None:
        """Close the gRPC channels."""
        if self._client is not None:
            self._client.close()
            self._client = None
            self._stubs.clear()

    def _metadata(self):
        return (("token", self._token),) if self._token else None

    def _authenticate(self, deadline: float) -> None:
        s = self.settings
        req = self._rpc.AuthenticateRequest(name=s.username, password=s.password or "")
        try:
            resp = self._call("Auth", "Authenticate", req, deadline, authenticate=False)
        except _AuthNotEnabled:
            log.info("etcd has authentication disabled; sending requests without a token")
            self._token = ""
            return
        self.authentications += 1
        self._token = resp.token
        log.debug("authenticated to etcd as %s", s.username)

    def _attempt_timeout(self, remaining: float, timed_out: set) -> float:
        """With several endpoints, the first try on each gets a share of the deadline, so one
        endpoint that accepts connections and never answers cannot use it all up."""
        n = len(self.settings.endpoints)
        if n == 1 or len(timed_out) >= n:
            return remaining
        return min(remaining, max(self.settings.timeout / n, 0.5))

    @timed("etcd")
    def _call(self, service: str, method: str, request, deadline: float | None = None, authenticate: bool = True):
        """Send one RPC, failing over and retrying until the deadline; map failures to CniError."""
        client = self._connect()
        grpc = self._grpc
        s = self.settings
        if deadline is None:
            deadline = time.monotonic() + s.timeout
        if self.deadline_at is not None and self.deadline_at < deadline:
            deadline = self.deadline_at
        if authenticate and s.username and self._token is None:
            self._authenticate(deadline)
        last = "no attempt made"
        delay = 0.05
        reauthenticated = False
        timed_out: set[str] = set()
        tls_problems: dict[str, CniError] = {}
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                if self.deadline_at is not None and deadline == self.deadline_at:
                    detail = f"the invocation's deadline (add_timeout) was reached: {last}"
                else:
                    detail = f"deadline of {s.timeout:g}s exceeded: {last}"
                if tls_problems:
                    detail += "; " + "; ".join(str(e) for e in tls_problems.values())
                elif "socket closed" in last.lower() and "http://" in last:
                    detail += " (if etcd serves TLS there, use an https:// endpoint)"
                raise DatastoreUnavailable(s.endpoints, detail)
            try:
                channel = client.channel
            except Exception:  # noqa: BLE001 - pyetcd raises when every endpoint is marked failed
                time.sleep(min(delay, max(remaining, 0)))
                delay = min(delay * 2, 0.5)
                continue
            endpoint = client.endpoint_in_use
            stub = self._stubs.get((service, channel))
            if stub is None:
                stub = self._stubs[(service, channel)] = getattr(self._rpc, f"{service}Stub")(channel)
            try:
                self.round_trips += 1
                return getattr(stub, method)(request, timeout=self._attempt_timeout(remaining, timed_out), metadata=self._metadata())
            except grpc.RpcError as exc:
                code = exc.code()
                detail = exc.details() or str(code)
                lowered = detail.lower()
                if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                    last = f"{endpoint}: {detail}"
                    log.warning("etcd call %s.%s failed on %s: %s", service, method, endpoint, detail)
                    endpoint.fail()
                    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
                        timed_out.add(endpoint.netloc)
                    if endpoint.secure and endpoint.netloc not in tls_problems and any(m in lowered for m in _TLS_MARKERS):
                        _, host, port = _split_endpoint(f"https://{endpoint.netloc}")
                        problem = diagnose_tls(s, host, port, deadline - time.monotonic())
                        if problem is not None:
                            tls_problems[endpoint.netloc] = problem
                            if len(tls_problems) == len(s.endpoints):
                                raise problem from None
                            # Other endpoints remain to be tried: keep a trace of this one.
                            log.warning("%s", problem)
                    continue
                if method == "Authenticate":
                    if "authentication is not enabled" in lowered:
                        raise _AuthNotEnabled() from None
                    if code == grpc.StatusCode.INVALID_ARGUMENT or "authentication failed" in lowered:
                        raise DatastoreCredentialsError(
                            f"etcd refused the user name or password of etcd user {s.username!r}",
                            "check etcd_username/etcd_password (or ETCD_USERNAME/ETCD_PASSWORD); etcd said: " + detail,
                        ) from None
                if code == grpc.StatusCode.UNAUTHENTICATED or any(m in lowered for m in _REAUTH_MARKERS):
                    if authenticate and s.username and not reauthenticated:
                        # An expired or vanished simple token (etcd restarted): authenticate again (rule 23).
                        log.info("etcd token rejected by %s (%s); authenticating again", endpoint, detail)
                        reauthenticated = True
                        self._token = None
                        self._authenticate(deadline)
                        continue
                    raise DatastoreCredentialsError("etcd refused the authentication token", detail) from None
                if "user name is empty" in lowered:
                    if authenticate and s.username and not reauthenticated:
                        # Authentication was enabled after we found it disabled.
                        reauthenticated = True
                        self._token = None
                        self._authenticate(deadline)
                        continue
                    raise DatastoreCredentialsError(
                        "etcd requires authentication and no etcd user is configured",
                        "set etcd_username and etcd_password (or ETCD_USERNAME and ETCD_PASSWORD)",
                    ) from None
                if code == grpc.StatusCode.PERMISSION_DENIED:
                    who = f"etcd user {s.username!r}" if s.username else "this client"
                    raise CniError(
                        IO_FAILURE,
                        f"etcd denied the request (permission denied for {who})",
                        f"grant it a role with readwrite on the /calico/ prefix; etcd said: {detail}",
                    ) from None
                raise CniError(IO_FAILURE, f"etcd request failed: {code.name}", detail) from None


    # -- reads --------------------------------------------------------------------------------

    def _range_request(self, r: Range, revision: int = 0):
        key = r.key.encode()
        req = self._rpc.RangeRequest(key=key, keys_only=r.keys_only, revision=revision)
        if r.prefix:
            req.range_end = _prefix_end(key)
        return req

    @staticmethod
    def _kv(kv) -> KeyValue:
        return KeyValue(kv.key.decode(), kv.value, kv.mod_revision, kv.create_revision, kv.version)

    def read(self, ranges: Sequence[Range], revision: int = 0) -> tuple[list[list[KeyValue]], int]:
        """Read several keys or prefixes in one round trip, at one revision.

        Returns the key-values of each range (in order) and the store revision they were read at.
        """
        self._connect()
        ops = [self._rpc.RequestOp(request_range=self._range_request(r, revision)) for r in ranges]
        resp = self._call("KV", "Txn", self._rpc.TxnRequest(success=ops))
        out = [[self._kv(kv) for kv in op.response_range.kvs] for op in resp.responses]
        return out, resp.header.revision

    def get(self, key: str) -> KeyValue | None:
        """One key, or None."""
        self._connect()
        resp = self._call("KV", "Range", self._range_request(Range(key)))
        return self._kv(resp.kvs[0]) if resp.kvs else None

    def get_prefix(self, prefix: str, keys_only: bool = False, revision: int = 0) -> list[KeyValue]:
        """Every key under `prefix`, in key order."""
        self._connect()
        resp = self._call("KV", "Range", self._range_request(Range(prefix, True, keys_only), revision))
        return [self._kv(kv) for kv in resp.kvs]

    # -- writes -------------------------------------------------------------------------------

    def commit(
        self,
        compares: Iterable[Compare],
        puts: Iterable[tuple[str, bytes]] = (),
        deletes: Iterable[str] = (),
    ) -> tuple[bool, int]:
        """Apply puts and deletes atomically if every compare holds.

        Returns (succeeded, revision). A failed compare is not an error: the caller re-reads.
        """
        self._connect()
        rpc = self._rpc
        cmp = []
        for c in compares:
            m = rpc.Compare(key=c.key.encode(), result=rpc.Compare.EQUAL)
            if c.prefix:
                m.range_end = _prefix_end(c.key.encode())
                m.result = rpc.Compare.LESS
                m.target = rpc.Compare.MOD
                m.mod_revision = c.mod_revision + 1
            elif c.mod_revision == 0:
                m.target = rpc.Compare.VERSION
                m.version = 0
            else:
                m.target = rpc.Compare.MOD
                m.mod_revision = c.mod_revision
            cmp.append(m)
        ops = [rpc.RequestOp(request_put=rpc.PutRequest(key=k.encode(), value=v)) for k, v in puts]
        ops += [rpc.RequestOp(request_delete_range=rpc.DeleteRangeRequest(key=k.encode())) for k in deletes]
        resp = self._call("KV", "Txn", rpc.TxnRequest(compare=cmp, success=ops))
        return resp.succeeded, resp.header.revision
