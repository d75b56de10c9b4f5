"""etcd v3 client: every call has a deadline and fails over between endpoints; reads, batched
reads at one revision, and compare-and-swap transactions.

Two transports behind one API. A one-shot client (an exec'd plugin, calicoctl) sends its few
calls to etcd's JSON gateway over plain HTTP/1.1 (`datastore.etcd_gateway`, standard library
only); a long-lived one (`lease`: the agent's and calico-node's warm channels; `open_stream`: the
watch) uses gRPC, built on `pyetcd` (package etcd-sdk-python) for the channels and protobuf
messages. gRPC, pyetcd and protobuf cost about 48 ms to import, which is most of what a plugin
exec'd without calico-node spent reaching etcd: they are imported only when gRPC is used, and the
TLS module (`datastore.tls`, which imports ssl) only for https endpoints. What a failed call means
is decided in `datastore.failures` for both transports; every failure is a `datastore.errors`
exception (`DatastoreUnavailable` when etcd cannot be reached before the deadline).
"""

from __future__ import annotations

import _thread
import logging
import os
import time
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Sequence

from calico_cni.config import EtcdSettings
from calico_cni.datastore import etcd_gateway as gateway
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

    Transport: etcd's JSON gateway until the client becomes long-lived (`lease`, `open_stream`
    switch it to gRPC for good), or an endpoint answers the gateway's path with 404 (etcd runs
    with `--enable-grpc-gateway=false`). With https endpoints and no user name the client uses
    gRPC from the start: etcd may then know the user by the client certificate's common name
    (`--client-cert-auth` with auth enabled), which the gateway does not pass on to etcd's auth.

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
        self._rpc_module = None
        self._grpc = None
        secure = any(e.startswith("https://") for e in settings.endpoints)
        # The JSON gateway's endpoints (made at the first call); False: this client uses gRPC.
        self._gateway: list[gateway.Endpoint] | None | bool = None if (settings.username or not secure) else False
        self._gateway_current = 0
        self._gateway_lock = _thread.allocate_lock()
        self._tls_context = None
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

    @property
    def _rpc(self):
        """pyetcd's protobuf messages and stubs (imported when first needed)."""
        if self._rpc_module is None:
            from pyetcd import etcdrpc  # noqa: PLC0415 - protobuf costs ~20 ms to import (module docstring)

            self._rpc_module = etcdrpc
        return self._rpc_module

    @_rpc.setter
    def _rpc(self, module) -> None:
        self._rpc_module = module

    @property
    def uses_gateway(self) -> bool:
        """Whether the next call goes to etcd's JSON gateway rather than over gRPC."""
        return self._gateway is not False

    @timed("etcd_connect")  # the first https call imports ssl (datastore.tls)
    def _open_gateway(self) -> list[gateway.Endpoint]:
        eps = self._gateway
        if eps:
            return eps
        s = self.settings
        if any(e.startswith("https://") for e in s.endpoints) and self._tls_context is None:
            from calico_cni.datastore.tls import tls_context  # noqa: PLC0415 - ssl only for https endpoints

            self._tls_context = tls_context(s)
        eps = [gateway.Endpoint(*_split_endpoint(url), time_retry=self.ENDPOINT_RETRY) for url in s.endpoints]
        # Spread one-shot processes over the endpoints (pyetcd picks at random; `random` costs 3 ms).
        self._gateway_current = os.getpid() % len(eps)
        self._gateway = eps
        return eps

    def _gateway_endpoint(self, eps: list[gateway.Endpoint]) -> gateway.Endpoint:
        """The endpoint in use unless it failed moments ago, else the first that did not (as
        pyetcd's failover picks a channel)."""
        current = eps[self._gateway_current]
        if not current.is_failed():
            return current
        for i, ep in enumerate(eps):
            if not ep.is_failed():
                self._gateway_current = i
                return ep
        raise gateway.NoEndpoint()

    def _exchange(self, endpoint: gateway.Endpoint, path: str, body: dict, timeout: float) -> dict:
        """One gateway exchange on the endpoint's idle keep-alive connection, taken for the
        exchange: a thread that finds none (another thread has it) opens its own, since one
        client may be shared by threads."""
        with self._gateway_lock:
            conn, endpoint.connection = endpoint.connection, None
        answer, conn = gateway.exchange(endpoint, conn, path, body, self._token, timeout, self._tls_context and (lambda: self._tls_context))
        if conn is not None:
            with self._gateway_lock:
                if endpoint.connection is None and self._gateway:
                    endpoint.connection, conn = conn, None
            if conn is not None:
                conn.close()
        return answer

    @timed("etcd_connect")  # the first call imports gRPC, pyetcd and the TLS module (ssl)
    def _connect(self):
        """Connect gRPC (channels are made lazily: no network traffic yet); from then on this
        client's calls use gRPC, not the gateway."""
        if self._client is not None:
            return self._client
        if self._gateway:
            for ep in self._gateway:
                ep.drop()
        self._gateway = False
        # gRPC's C core prints its own TLS diagnostics on stderr; ours are in the datastore error.
        os.environ.setdefault("GRPC_VERBOSITY", "NONE")
        # Imported here, not at the top: they cost tens of milliseconds (see the module docstring).
        import grpc  # noqa: PLC0415
        import pyetcd  # noqa: PLC0415

        from calico_cni.datastore.tls import load_tls_credentials  # noqa: PLC0415

        self._grpc = grpc
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
        leased._client, leased._grpc, leased._rpc, leased._gateway = self._client, self._grpc, self._rpc, False
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
        """Close the gRPC channels or the gateway's connections; a lease (see `lease`) keeps them
        and returns its token."""
        if self._return_token is not None:
            if self._token is not None:
                self._return_token(self._token)
            return
        if self._gateway:
            for ep in self._gateway:
                ep.drop()
        if self._client is not None:
            self._client.close()
            self._client = None
            self._stubs.clear()

    def _metadata(self):
        return (("token", self._token),) if self._token else None

    def _authenticate(self, deadline: float) -> None:
        s = self.settings
        body = {"name": s.username, "password": s.password or ""}
        try:
            resp = self._call(
                "Auth",
                "Authenticate",
                lambda: self._rpc.AuthenticateRequest(**body),
                deadline,
                authenticate=False,
                gateway_form=(gateway.AUTHENTICATE, body),
            )
        except _AuthNotEnabled:
            log.info("etcd has authentication disabled; sending requests without a token")
            self._token = ""
            return
        self.authentications += 1
        self._token = resp.get("token", "") if isinstance(resp, dict) else resp.token
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
        # Loaded already for https endpoints (by `_connect` or `_open_gateway`); imported here so this
        # module's import stays cheap.
        from calico_cni.datastore.tls import diagnose_tls  # noqa: PLC0415

        _, host, port = _split_endpoint(f"https://{netloc}")
        return diagnose_tls(self.settings, host, port, deadline - time.monotonic())

    @timed("etcd")
    def _call(self, service: str, method: str, request, deadline: float | None = None, authenticate: bool = True, gateway_form: tuple[str, dict] | None = None):
        """Send one RPC, failing over and retrying until the deadline; every failure is raised as a
        `datastore.errors` exception (see `datastore.failures` for what each one means).

        `request` is the protobuf request, or a function making it (called only if the call goes
        over gRPC). `gateway_form` is the same call for etcd's JSON gateway, (path, protojson
        body); without it the call goes over gRPC, and so does every later call of this client.
        Returns gRPC's answer, or the gateway's answer as decoded JSON (a dict).
        """
        s = self.settings
        if deadline is None:
            deadline = time.monotonic() + s.timeout
        if self.deadline_at is not None and self.deadline_at < deadline:
            deadline = self.deadline_at
        if gateway_form is None or not self.uses_gateway:
            self._connect()
        elif not self._gateway:
            self._open_gateway()
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
            eps = self._gateway
            if eps and gateway_form is not None:
                try:
                    endpoint = self._gateway_endpoint(eps)
                except gateway.NoEndpoint:
                    time.sleep(min(delay, max(remaining, 0)))
                    delay = min(delay * 2, 0.5)
                    continue
                try:
                    self.round_trips += 1
                    return self._exchange(endpoint, *gateway_form, self._attempt_timeout(remaining, timed_out))
                except gateway.GatewayOff:
                    log.info("%s does not serve etcd's JSON gateway (HTTP 404); using gRPC", endpoint)
                    self._connect()
                    continue
                except gateway.GatewayFailure as exc:
                    code, detail = exc.code, exc.detail
            else:
                client = self._connect()
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
                if callable(request):
                    request = request()
                try:
                    self.round_trips += 1
                    return getattr(stub, method)(request, timeout=self._attempt_timeout(remaining, timed_out), metadata=self._metadata())
                except self._grpc.RpcError as exc:
                    status = exc.code()
                    code, detail = status.name, exc.details() or str(status)
            failure = failures.classify(code, detail, authenticating=method == "Authenticate")
            if failure is Failure.ENDPOINT_DOWN:
                last = f"{endpoint}: {detail}"
                log.warning("etcd call %s.%s failed on %s: %s", service, method, endpoint, detail)
                endpoint.fail()
                if code == "DEADLINE_EXCEEDED":
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
            raise failures.request_failed(code, detail) from None

    # -- streams ------------------------------------------------------------------------------

    def open_stream(
        self, service: str, method: str, requests: Iterator, metadata: Sequence[tuple[str, str]] = (), reauthenticate: bool = False
    ) -> tuple[object, Callable[[], None]]:
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
    def _range_json(r: Range, revision: int = 0) -> dict:
        key = r.key.encode()
        return gateway.range_request(key, _prefix_end(key) if r.prefix else None, r.keys_only, revision)

    @staticmethod
    def _kv(kv) -> KeyValue:
        if isinstance(kv, dict):
            return KeyValue(*gateway.key_value(kv))
        return KeyValue(kv.key.decode(), kv.value, kv.mod_revision, kv.create_revision, kv.version)

    def read(self, ranges: Sequence[Range], revision: int = 0) -> tuple[list[list[KeyValue]], int]:
        """Read several keys or prefixes in one round trip, at one revision.

        Returns the key-values of each range (in order) and the store revision they were read at.
        """
        json_form = None
        if self.uses_gateway:
            json_form = (gateway.TXN, {"success": [{"request_range": self._range_json(r, revision)} for r in ranges]})

        def grpc_form():
            rpc = self._rpc
            return rpc.TxnRequest(success=[rpc.RequestOp(request_range=self._range_request(r, revision)) for r in ranges])

        resp = self._call("KV", "Txn", grpc_form, gateway_form=json_form)
        if isinstance(resp, dict):
            out = [[self._kv(kv) for kv in op.get("response_range", {}).get("kvs", ())] for op in resp.get("responses", ())]
            return out, gateway.revision(resp)
        out = [[self._kv(kv) for kv in op.response_range.kvs] for op in resp.responses]
        return out, resp.header.revision

    def get(self, key: str) -> KeyValue | None:
        """One key, or None."""
        r = Range(key)
        resp = self._call("KV", "Range", lambda: self._range_request(r), gateway_form=(gateway.RANGE, self._range_json(r)) if self.uses_gateway else None)
        kvs = resp.get("kvs") if isinstance(resp, dict) else resp.kvs
        return self._kv(kvs[0]) if kvs else None

    def get_prefix(self, prefix: str, keys_only: bool = False, revision: int = 0) -> list[KeyValue]:
        """Every key under `prefix`, in key order."""
        r = Range(prefix, True, keys_only)
        resp = self._call(
            "KV",
            "Range",
            lambda: self._range_request(r, revision),
            gateway_form=(gateway.RANGE, self._range_json(r, revision)) if self.uses_gateway else None,
        )
        return [self._kv(kv) for kv in (resp.get("kvs", ()) if isinstance(resp, dict) else resp.kvs)]

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
        compares, puts, deletes = list(compares), list(puts), list(deletes)
        json_form = None
        if self.uses_gateway:
            cmp = []
            for c in compares:
                key = c.key.encode()
                if c.prefix:
                    cmp.append(gateway.compare(key, _prefix_end(key), "LESS", "MOD", c.mod_revision + 1))
                elif c.mod_revision == 0:
                    cmp.append(gateway.compare(key, None, "EQUAL", "VERSION", 0))
                else:
                    cmp.append(gateway.compare(key, None, "EQUAL", "MOD", c.mod_revision))
            ops = [gateway.put(k.encode(), v) for k, v in puts] + [gateway.delete(k.encode()) for k in deletes]
            json_form = (gateway.TXN, {"compare": cmp, "success": ops})
        resp = self._call("KV", "Txn", lambda: self._txn_request(compares, puts, deletes), gateway_form=json_form)
        if isinstance(resp, dict):
            return bool(resp.get("succeeded", False)), gateway.revision(resp)
        return resp.succeeded, resp.header.revision

    def _txn_request(self, compares: list[Compare], puts: list[tuple[str, bytes]], deletes: list[str]):
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
        return rpc.TxnRequest(compare=cmp, success=ops)
