"""Connection options, the datastore a command talks to, and the options every listing shares.

Connection settings are taken, first match wins, from: the command-line flags (accepted before
the verb or after it), the Calico plugin entry of the CNI config named by `--config`, the ETCD_*
environment variables the plugins also read, and finally Calico's default endpoint
http://127.0.0.1:2379.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any, Callable

import click

from calico_cni.config import ETCD_STRING_KEYS, EtcdSettings, etcd_settings, journal_dir
from calico_cni.datastore.store import Datastore, connect
from calico_cni.journal import Journal
from calico_ipam import replay

from calico_cni.ctl.errors import CtlError

DEFAULT_ENDPOINT = "http://127.0.0.1:2379"
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


def load_cni_config(path: str) -> dict[str, Any]:
    """The etcd keys of the Calico plugin in a CNI network config (.conflist or single .conf)."""
    doc = read_json_file(path)
    if not isinstance(doc, dict):
        raise CtlError(f"{path} is not a CNI network configuration (expected a JSON object)")
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
        config: dict[str, Any] = load_cni_config(self.config_file) if self.config_file else {}
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
    ("--config", "config", dict(metavar="PATH", help="Take the etcd settings from the calico plugin of this CNI config (.conflist or .conf).")),
)


def connection_options(f: Callable) -> Callable:
    """The etcd connection flags, for the root command and every verb (either place works; a flag
    given after the verb wins). Their values go to the shared `Connection`, not to `f`."""
    for flag, key, extra in reversed(_CONNECTION_OPTIONS):
        f = click.option(flag, expose_value=False, callback=_store_flag(key), **extra)(f)
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
