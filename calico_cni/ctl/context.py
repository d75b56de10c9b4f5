"""Connection options, the datastore a command talks to, and the options every listing shares.

Connection settings are taken, first match wins, from: the command-line flags (accepted before
the verb or after it), the file named by `-c/--config` (Calico's `calicoctl.cfg`, a
`CalicoAPIConfig`, or a CNI config whose calico plugin entry has the etcd keys; without
`--config`, `/etc/calico/calicoctl.cfg` when it exists), the ETCD_* environment variables the
plugins also read, and finally Calico's default endpoint http://127.0.0.1:2379.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any, Callable

import click
import yaml

from calico_cni.config import ETCD_STRING_KEYS, EtcdSettings, etcd_settings, journal_dir
from calico_cni.datastore.store import Datastore, connect
from calico_cni.journal import Journal
from calico_ipam import replay

from calico_cni.ctl.errors import CtlError

DEFAULT_ENDPOINT = "http://127.0.0.1:2379"
# Where calicoctl looks for its configuration when --config is not given.
DEFAULT_CONFIG = "/etc/calico/calicoctl.cfg"
# calicoctl.cfg's spec fields (CalicoAPIConfig) and the plugin config keys they mean.
API_CONFIG_KEYS = {
    "datastoreType": "datastore_type",
    "etcdEndpoints": "etcd_endpoints",
    "etcdUsername": "etcd_username",
    "etcdPassword": "etcd_password",
    "etcdKeyFile": "etcd_key_file",
    "etcdCertFile": "etcd_cert_file",
    "etcdCACertFile": "etcd_ca_cert_file",
}
# Inline certificates of calicoctl.cfg, which need files here.
API_CONFIG_INLINE = ("etcdKey", "etcdCert", "etcdCACert")
# The keys of a Calico plugin's network configuration that say how to reach etcd.
ETCD_KEYS = ("datastore_type", *ETCD_STRING_KEYS, "etcd_timeout")


def read_json_file(path: str) -> Any:
    """A JSON file's content; CtlError naming the file when it cannot be read or parsed."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except OSError as exc:
        raise CtlError(f"cannot read {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise CtlError(f"{path} is not valid JSON: {exc}") from None


def _api_config(path: str, doc: dict[str, Any]) -> dict[str, Any]:
    """The etcd keys of a calicoctl.cfg (`kind: CalicoAPIConfig`)."""
    spec = doc.get("spec") or {}
    if not isinstance(spec, dict):
        raise CtlError(f"{path}: spec of a CalicoAPIConfig must be an object")
    inline = [k for k in API_CONFIG_INLINE if spec.get(k)]
    if inline:
        raise CtlError(f"{path}: inline certificates ({', '.join(inline)}) are not supported: write them to files and name them in etcdKeyFile, etcdCertFile and etcdCACertFile")
    unknown = sorted(k for k in spec if k not in API_CONFIG_KEYS and k not in API_CONFIG_INLINE)
    if unknown:
        raise CtlError(f"{path}: unknown field spec.{unknown[0]} of a CalicoAPIConfig (known: {', '.join(API_CONFIG_KEYS)})")
    config = {API_CONFIG_KEYS[k]: v for k, v in spec.items() if k in API_CONFIG_KEYS and v not in (None, "")}
    if config.get("datastore_type") == "kubernetes":
        raise CtlError(f"{path}: datastoreType kubernetes is not supported: this calicoctl manages Calico's etcd v3 datastore (etcdv3)")
    return config


def _read_config(path: str) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as exc:
        raise CtlError(f"cannot read {path}: {exc.strerror}") from None
    try:
        return json.loads(text)
    except ValueError:
        pass
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise CtlError(f"{path} is neither JSON nor YAML: {str(exc).splitlines()[0]}") from None


def load_config(path: str) -> dict[str, Any]:
    """The etcd keys of a config file: Calico's calicoctl.cfg (`kind: CalicoAPIConfig`, YAML or
    JSON), or the Calico plugin of a CNI network config (.conflist or single .conf)."""
    doc = _read_config(path)
    if isinstance(doc, dict) and doc.get("kind") == "CalicoAPIConfig":
        return _api_config(path, doc)
    if not isinstance(doc, dict):
        raise CtlError(f"{path} is neither a calicoctl.cfg (kind: CalicoAPIConfig) nor a CNI network configuration")
    plugins = doc.get("plugins") if isinstance(doc.get("plugins"), list) else [doc]
    for plugin in plugins:
        if isinstance(plugin, dict) and (plugin.get("type") in ("calico", "calico-ipam") or "etcd_endpoints" in plugin):
            return {k: plugin[k] for k in ETCD_KEYS if k in plugin}
    raise CtlError(f"{path} has no calico or calico-ipam plugin to take the etcd settings from")


@dataclass
class Connection:
    """What the connection flags said (None: not given)."""

    config_file: str | None = None
    flags: dict[str, Any] = field(default_factory=dict)

    def settings(self, environ=None) -> EtcdSettings:
        """The etcd settings: the flags, then the --config file's calico plugin, then the ETCD_*
        variables of `environ`, then the default endpoint."""
        environ = os.environ if environ is None else environ
        path = self.config_file or (DEFAULT_CONFIG if os.path.exists(DEFAULT_CONFIG) else None)
        config: dict[str, Any] = load_config(path) if path else {}
        config.update(self.flags)
        if not any(config.get(k) for k in ("etcd_endpoints", "etcd_authority")) and not (
            environ.get("ETCD_ENDPOINTS") or environ.get("ETCD_AUTHORITY")
        ):
            config["etcd_endpoints"] = DEFAULT_ENDPOINT
        return etcd_settings(config, environ)


def _connection(ctx: click.Context) -> Connection:
    return ctx.meta.setdefault("calicoctl.connection", Connection())


def _store_flag(key: str) -> Callable:
    def callback(ctx: click.Context, param: click.Parameter, value: Any) -> None:
        if value is None:
            return
        conn = _connection(ctx)
        if key == "config":
            conn.config_file = value
        else:
            conn.flags[key] = value

    return callback


_CONNECTION_OPTIONS = (
    ("--etcd-endpoints", "etcd_endpoints", dict(metavar="URLS", help="Comma-separated etcd URLs [env ETCD_ENDPOINTS; default http://127.0.0.1:2379].")),
    ("--etcd-ca-cert-file", "etcd_ca_cert_file", dict(metavar="PATH", help="CA certificate for https endpoints [env ETCD_CA_CERT_FILE].")),
    ("--etcd-cert-file", "etcd_cert_file", dict(metavar="PATH", help="Client certificate [env ETCD_CERT_FILE].")),
    ("--etcd-key-file", "etcd_key_file", dict(metavar="PATH", help="Client key [env ETCD_KEY_FILE].")),
    ("--etcd-timeout", "etcd_timeout", dict(type=click.FloatRange(min=0.1), metavar="SECONDS", help="Deadline of each etcd call (default 5).")),
    ("-c/--config", "config", dict(metavar="PATH", help="Take the etcd settings from this calicoctl.cfg (kind: CalicoAPIConfig) or from the calico plugin of this CNI config [default /etc/calico/calicoctl.cfg when it exists].")),
)


def connection_options(f: Callable) -> Callable:
    """The etcd connection flags, for the root command and every verb (either place works; a flag
    given after the verb wins). Their values go to the shared `Connection`, not to `f`."""
    for flag, key, extra in reversed(_CONNECTION_OPTIONS):
        f = click.option(*flag.split("/"), expose_value=False, callback=_store_flag(key), **extra)(f)
    return f


class Ctl:
    """Per-invocation state: the datastore, connected on first use and closed at the end."""

    def __init__(self, ctx: click.Context) -> None:
        self._ctx = ctx
        self._store: Datastore | None = None

    def settings(self) -> EtcdSettings:
        """The etcd settings the connection flags, the --config file and the environment give."""
        return _connection(self._ctx).settings()

    @property
    def store(self) -> Datastore:
        """The datastore, connected on first use; closed (and the node's pending releases
        replayed) when the command ends."""
        if self._store is None:
            self._store = connect(self.settings())
            self._ctx.call_on_close(self._store.close)
            self._ctx.call_on_close(self._replay_journal)
        return self._store

    def _replay_journal(self) -> None:
        """Finish the node's pending releases (DELs that found etcd unreachable), once the
        command's own etcd work succeeded. The journal is CALICO_RELEASE_JOURNAL_DIR, else the
        plugins' default."""
        journal = Journal(journal_dir({}))
        if journal.pending():
            try:
                replay.replay(self._store, journal)
            except Exception as exc:  # noqa: BLE001 - the command's own outcome is what counts
                click.echo(f"calicoctl: warning: pending releases not replayed yet: {exc}", err=True)


def ctl() -> Ctl:
    """The invocation's `Ctl` (created on first use)."""
    ctx = click.get_current_context()
    root = ctx.find_root()
    if not isinstance(root.obj, Ctl):
        root.obj = Ctl(root)
    return root.obj


def output_option(f: Callable) -> Callable:
    """`-o/--output table|json|yaml` (table by default)."""
    return click.option(
        "-o",
        "--output",
        "output",
        type=click.Choice(["table", "json", "yaml"], case_sensitive=False),
        default="table",
        show_default=True,
        help="Output format: a table for people, json or yaml for scripts.",
    )(f)
