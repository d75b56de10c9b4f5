"""etcd v3 client: every call has a deadline and fails over between endpoints; reads, batched
reads at one revision, and compare-and-swap transactions.

Built on `pyetcd` (package etcd-sdk-python) for the gRPC channels and protobuf messages. gRPC,
pyetcd and the TLS module (`datastore.tls`, which imports ssl) cost tens of milliseconds to import:
they are imported at the first call, so verbs that never touch etcd do not pay for them. What a
failed call means is decided in `datastore.failures`; every failure is a `datastore.errors`
exception (`DatastoreUnavailable` when etcd cannot be reached before the deadline).
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Sequence

from calico_cni.config import EtcdSettings
from calico_cni.datastore import failures
from calico_cni.datastore.errors import DatastoreError
from calico_cni.datastore.failures import Failure
from calico_cni.timing import timed

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


def _prefix_end(prefix: bytes) -> bytes:
    """The range_end that selects every key starting with `prefix`."""
    s = bytearray(prefix)
    for i in reversed(range(len(s))):
        if s[i] < 0xFF:
            s[i] += 1
            return bytes(s[: i + 1])
    return b"\0"


def _split_endpoint(url: str) -> tuple[bool, str, int]:
    """(https?, host, port) of an endpoint URL; port 2379 when the URL names none."""
    scheme, _, rest = url.partition("://")
    rest = rest.rstrip("/")
    host, _, port = rest.rpartition(":")
    if not host or not port.isdigit():
        host, port = rest, "2379"
    return scheme == "https", host, int(port)


class _AuthNotEnabled(Exception):
    """Authenticate was answered with "authentication is not enabled"."""


class EtcdClient:
    """A deadline-bound etcd v3 client over one or more endpoints.

    Security behaviour: with https endpoints the TLS files are checked before the first call and a
    certificate problem is reported as a `DatastoreCredentialsError` naming the file, not retried
    as "try again later"; with a user name, the client authenticates once and authenticates again
    whenever etcd says its token is invalid or stale (expired simple token, etcd restarted), once
    per call.
    """

    # How long a failed endpoint is skipped before it is tried again.
    ENDPOINT_RETRY = 0.5
    # gRPC's reconnect back-off grows to 120 s by default, shared by every channel to an address: a
    # long-lived client (calico-node, the agent) would wait up to two minutes after etcd returns.
    # Keepalive pings while calls are open (calico-node always has its watch): a connection that died
    # silently (the node's address changed, a firewall dropped it) is closed and made again within
    # 15 s; without them every call fails on it until TCP gives up, many minutes later. 10 s is
    # above etcd's default minimum ping interval (5 s), so etcd does not refuse them.
    CHANNEL_OPTIONS = [
        ("grpc.max_reconnect_backoff_ms", 2000),
        ("grpc.keepalive_time_ms", 10000),
        ("grpc.keepalive_timeout_ms", 5000),
        ("grpc.http2.max_pings_without_data", 0),
    ]

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
        # Set on a lease (see `lease`): hands a token back to the client that owns the channel.
        # None: this client owns its channel.
        self._return_token: Callable[[str], None] | None = None

    # -- connection ---------------------------------------------------------------------------

    @timed("etcd_connect")  # the first call imports gRPC, pyetcd and the TLS module (ssl)
    def _connect(self):
        if self._client is not None:
            return self._client
        # gRPC's C core prints its own TLS diagnostics on stderr; ours are in the datastore error.
        os.environ.setdefault("GRPC_VERBOSITY", "NONE")
        # Imported here, not at the top: they cost tens of milliseconds (see the module docstring).
        import grpc  # noqa: PLC0415
        import pyetcd  # noqa: PLC0415
        from pyetcd import etcdrpc  # noqa: PLC0415

        from calico_cni.datastore.tls import load_tls_credentials  # noqa: PLC0415

        self._grpc, self._rpc = grpc, etcdrpc
        s = self.settings
        creds = None
        if any(e.startswith("https://") for e in s.endpoints):
            creds = load_tls_credentials(s)
        endpoints = []
        for url in s.endpoints:
            secure, host, port = _split_endpoint(url)
            endpoints.append(
                pyetcd.Endpoint(host, port, secure=secure, creds=creds if secure else None, time_retry=self.ENDPOINT_RETRY, opts=self.CHANNEL_OPTIONS)
            )
        self._client = pyetcd.MultiEndpointEtcd3Client(endpoints=endpoints, timeout=s.timeout, failover=True)
        return self._client

    def lease(self) -> EtcdClient:
        """A client for one request over this client's channel (connecting it first if needed).

        The lease has its own deadline (`deadline_at`), round-trip and authentication counts, and
        starts with this client's auth token. Closing it keeps the channel open and hands a token
        it refreshed back to this client, so the next lease does not authenticate again. Used by
        the agent, which keeps one warm channel per etcd settings for all its requests.
        """
        self._connect()
        leased = EtcdClient(self.settings)
        leased._client, leased._grpc, leased._rpc = self._client, self._grpc, self._rpc
        # Stubs are keyed by channel, which are fixed per endpoint: the dict stays small, and two
        # request threads building the same stub at once only build it twice.
        leased._stubs, leased._token = self._stubs, self._token
        lent = self._token

        def hand_back(token: str) -> None:
            # Only over the token this lease started with: a lease that kept an old token must not
            # overwrite the one a concurrent lease refreshed (the next lease would authenticate again).
            if self._token == lent:
                self._token = token

        leased._return_token = hand_back
        return leased

    def close(self) -> None:
        """Close the gRPC channels; a lease (see `lease`) keeps them and returns its token."""
        if self._return_token is not None:
            if self._token is not None:
                self._return_token(self._token)
            return
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

    def _diagnose_tls(self, netloc: str, deadline: float) -> DatastoreError | None:
        """What is wrong with TLS at an endpoint whose failure pointed at the TLS layer."""
        # Loaded with gRPC by `_connect` already; imported here so this module's import stays cheap.
        from calico_cni.datastore.tls import diagnose_tls  # noqa: PLC0415

        _, host, port = _split_endpoint(f"https://{netloc}")
        return diagnose_tls(self.settings, host, port, deadline - time.monotonic())

    @timed("etcd")
    def _call(self, service: str, method: str, request, deadline: float | None = None, authenticate: bool = True):
        """Send one RPC, failing over and retrying until the deadline; every failure is raised as a
        `datastore.errors` exception (see `datastore.failures` for what each one means)."""
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
        tls_problems: dict[str, DatastoreError] = {}
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                if self.deadline_at is not None and deadline == self.deadline_at:
                    limit = "the invocation's deadline (add_timeout) was reached"
                else:
                    limit = f"deadline of {s.timeout:g}s exceeded"
                raise failures.unreachable(s.endpoints, last, limit, list(tls_problems.values()))
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
                failure = failures.classify(code.name, detail, authenticating=method == "Authenticate")
            if failure is Failure.ENDPOINT_DOWN:
                last = f"{endpoint}: {detail}"
                log.warning("etcd call %s.%s failed on %s: %s", service, method, endpoint, detail)
                endpoint.fail()
                if code == grpc.StatusCode.DEADLINE_EXCEEDED:
                    timed_out.add(endpoint.netloc)
                if endpoint.secure and endpoint.netloc not in tls_problems and failures.points_at_tls(detail):
                    problem = self._diagnose_tls(endpoint.netloc, deadline)
                    if problem is not None:
                        tls_problems[endpoint.netloc] = problem
                        if len(tls_problems) == len(s.endpoints):
                            raise problem from None
                        # Other endpoints remain to be tried: keep a trace of this one.
                        log.warning("%s", problem)
                continue
            if failure is Failure.AUTH_NOT_ENABLED:
                raise _AuthNotEnabled() from None
            if failure is Failure.BAD_PASSWORD:
                raise failures.bad_password(s.username, detail) from None
            if failure in (Failure.REAUTHENTICATE, Failure.NO_USER):
                if authenticate and s.username and not reauthenticated:
                    # REAUTHENTICATE: a simple token expires, and vanishes when etcd restarts, so a
                    # long-lived client (the agent) gets a new one instead of failing.
                    # NO_USER: authentication was enabled after we found it disabled.
                    if failure is Failure.REAUTHENTICATE:
                        log.info("etcd token rejected by %s (%s); authenticating again", endpoint, detail)
                    reauthenticated = True
                    self._token = None
                    self._authenticate(deadline)
                    continue
                raise (failures.token_refused(detail) if failure is Failure.REAUTHENTICATE else failures.no_user()) from None
            if failure is Failure.PERMISSION:
                raise failures.permission_denied(s.username, detail) from None
            raise failures.request_failed(code.name, detail) from None

    # -- streams ------------------------------------------------------------------------------

    def open_stream(self, service: str, method: str, requests: Iterator, metadata: Sequence[tuple[str, str]] = (),
                    reauthenticate: bool = False) -> tuple[object, Callable[[], None]]:
        """Open a streaming RPC (etcd's Watch) on the endpoint in use, carrying the auth token and
        `metadata`; used by `datastore.watch`.

        Authenticates first when the client has no token yet, or again with `reauthenticate` (a
        stream was refused the token: streams are not retried here as `_call` retries requests).
        Authentication is bounded by the client's timeout; the stream itself has no deadline: the
        caller cancels it (`call.cancel()`). Returns the gRPC call and a function marking the
        endpoint failed, for the caller to use when the stream died of that endpoint, so the next
        call fails over to another one.
        """
        self._connect()
        deadline = time.monotonic() + self.settings.timeout
        if self.settings.username and (self._token is None or reauthenticate):
            self._token = None
            self._authenticate(deadline)
        client = self._client
        while True:
            try:
                channel = client.channel
                break
            except Exception as exc:  # noqa: BLE001 - pyetcd raises when every endpoint is marked failed
                # Each failed endpoint is retried after ENDPOINT_RETRY: wait for that, not for the deadline.
                if time.monotonic() + 0.05 > deadline:
                    raise failures.unreachable(self.settings.endpoints, str(exc), "every endpoint failed moments ago", []) from None
                time.sleep(0.05)
        endpoint = client.endpoint_in_use
        stub = self._stubs.get((service, channel))
        if stub is None:
            stub = self._stubs[(service, channel)] = getattr(self._rpc, f"{service}Stub")(channel)
        self.round_trips += 1
        call = getattr(stub, method)(requests, metadata=(*(self._metadata() or ()), *metadata))
        return call, endpoint.fail

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
