"""etcd v3 connection: every call has a deadline, fails over between endpoints, and maps failures
to CNI errors (11 "try again later" when etcd cannot be reached).

Built on `pyetcd` (package etcd-sdk-python) for the gRPC channels and protobuf messages; the
client is created lazily so verbs that never touch etcd do not pay for importing gRPC.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Iterable, Sequence

from ..config import EtcdSettings
from ..protocol.errors import IO_FAILURE, TRY_AGAIN_LATER, CniError

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


class EtcdClient:
    """A deadline-bound etcd v3 client over one or more endpoints."""

    # How long a failed endpoint is skipped before it is tried again.
    ENDPOINT_RETRY = 0.5

    def __init__(self, settings: EtcdSettings) -> None:
        self.settings = settings
        self._client = None
        self._rpc = None
        self._grpc = None
        self._token: str | None = None
        self.round_trips = 0

    # -- connection ---------------------------------------------------------------------------

    def _connect(self):
        if self._client is not None:
            return self._client
        import grpc
        import pyetcd
        from pyetcd import etcdrpc

        self._grpc, self._rpc = grpc, etcdrpc
        s = self.settings
        creds = None
        if any(e.startswith("https://") for e in s.endpoints):
            try:
                creds = pyetcd.MultiEndpointEtcd3Client.get_secure_creds(s.ca_cert_file, s.key_file, s.cert_file) if s.ca_cert_file else grpc.ssl_channel_credentials()
            except OSError as exc:
                raise CniError(IO_FAILURE, f"cannot read etcd TLS files: {exc.strerror}: {exc.filename}") from None
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

    def _metadata(self):
        return (("token", self._token),) if self._token else None

    def _authenticate(self, deadline: float) -> None:
        s = self.settings
        req = self._rpc.AuthenticateRequest(name=s.username, password=s.password)
        resp = self._call("Auth", "Authenticate", req, deadline, authenticate=False)
        self._token = resp.token

    def _call(self, service: str, method: str, request, deadline: float | None = None, authenticate: bool = True):
        """Send one RPC, failing over and retrying until the deadline; map failures to CniError."""
        client = self._connect()
        grpc = self._grpc
        if deadline is None:
            deadline = time.monotonic() + self.settings.timeout
        if authenticate and self.settings.username and self._token is None:
            self._authenticate(deadline)
        last = "no attempt made"
        delay = 0.05
        reauthenticated = False
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise DatastoreUnavailable(self.settings.endpoints, f"deadline of {self.settings.timeout:g}s exceeded: {last}")
            try:
                channel = client.channel
            except Exception as exc:  # noqa: BLE001 - pyetcd raises when every endpoint is marked failed
                last = str(exc) or type(exc).__name__
                time.sleep(min(delay, max(remaining, 0)))
                delay = min(delay * 2, 0.5)
                continue
            stub = getattr(self._rpc, f"{service}Stub")(channel)
            try:
                self.round_trips += 1
                return getattr(stub, method)(request, timeout=remaining, metadata=self._metadata())
            except grpc.RpcError as exc:
                code = exc.code()
                detail = exc.details() or str(code)
                if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                    last = f"{client.endpoint_in_use}: {detail}"
                    log.warning("etcd call %s.%s failed on %s: %s", service, method, client.endpoint_in_use, detail)
                    client.endpoint_in_use.fail()
                    continue
                if code == grpc.StatusCode.UNAUTHENTICATED or "token" in detail and "invalid" in detail:
                    if authenticate and self.settings.username and not reauthenticated:
                        reauthenticated = True
                        self._token = None
                        self._authenticate(deadline)
                        continue
                    raise CniError(IO_FAILURE, "etcd refused the credentials", detail) from None
                if code == grpc.StatusCode.PERMISSION_DENIED:
                    raise CniError(IO_FAILURE, "etcd denied the request (permission denied)", detail) from None
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
