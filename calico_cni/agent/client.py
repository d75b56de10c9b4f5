"""The thin path of the exec'd plugins: hand the request to the agent, or say "run in-process".

This module and `wire` import nothing beyond what `python -I -S` has loaded at startup (`sys`,
`posix`) and the builtin `_socket`: not `socket` (7 ms), `json` (8 ms), nor even `os` (1 ms, which
`-S` does not load) or `__future__`; and once the answer is written the process ends with
`posix._exit`, skipping the interpreter's teardown (1 to 1.5 ms). The launchers of `calico` and
`calico-ipam` import this module directly (`calico_cni.launcher`), not the plugins' packages. Rules:
- socket absent, not a socket, refused or not reachable: nothing was sent, run in-process;
- once connected, the request belongs to the agent: if the answer never comes (agent killed,
  restarted, timed out), the plugin prints CNI error 11 "try again later" and never runs it itself,
  since the agent may have done part or all of it.
"""

import posix
import sys

import _socket

from calico_cni.agent import wire

# Longer than the agent's own bound on one operation (config.MAX_OPERATION_TIMEOUT, 55 s).
ANSWER_TIMEOUT = 58.0
# A daemon that no longer accepts (its listen queue full: hung) leaves connect() blocking for good;
# after this long the plugin does the work itself (nothing was sent).
CONNECT_TIMEOUT = 2.0
MAX_STDIN = 4 * 1024 * 1024  # as calico_cni.protocol.request.MAX_STDIN


def socket_path(environ, stdin: bytes) -> str | None:
    """The agent socket for this request; None when the agent is switched off (empty value)."""
    if wire.SOCKET_ENV in environ:
        return environ[wire.SOCKET_ENV] or None
    if wire.SOCKET_KEY.encode() in stdin:
        import json  # only when the network config may name a socket

        try:
            value = json.loads(stdin).get(wire.SOCKET_KEY)
        except (ValueError, AttributeError):
            value = None
        if isinstance(value, str):
            return value or None
    return wire.DEFAULT_SOCKET


def connect(path: str, timeout: float = CONNECT_TIMEOUT):
    """A connection to the agent at `path`, or None (absent, refused, not accepting within
    `timeout`: nothing was sent)."""
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM | _socket.SOCK_CLOEXEC)
    try:
        sock.settimeout(timeout)
        sock.connect(path)
    except OSError:
        sock.close()
        return None
    return sock


def _try_again(stdin: bytes, detail: str, msg: str = "calico-cni-agent did not answer") -> bytes:
    """CNI error 11 JSON (the error path may import the protocol modules)."""
    from calico_cni.protocol.errors import TRY_AGAIN_LATER, CniError
    from calico_cni.protocol.runner import error_output

    return error_output(CniError(TRY_AGAIN_LATER, msg, detail), stdin)


def policy_marker(path: str) -> str:
    """The file calico-node writes beside its socket `path` once it enforces network policy
    (node/rules.py); the run directory, cleared by a reboot as the kernel's tables are. (As
    os.path.join(os.path.dirname(path), ...), without importing os.)"""
    directory, slash, _ = path.rpartition("/")
    directory = directory.rstrip("/") or slash
    return f"{directory.rstrip('/')}/policy-enforced" if directory else "policy-enforced"


def _exists(path: str) -> bool:
    try:
        posix.stat(path)
    except OSError:
        return False
    return True


def _str_environ() -> dict[str, str]:
    """The environment as os.environ decodes it (UTF-8, undecodable bytes as surrogates)."""
    return {k.decode("utf-8", "surrogateescape"): v.decode("utf-8", "surrogateescape") for k, v in posix.environ.items()}


def _daemon_needed(stdin: bytes, path: str | None) -> bytes:
    """Error 11 for an ADD that would create a pod calico-node's fail-closed dispatch drops (`path`:
    the plugins' socket; None: switched off in the configuration)."""
    where = f"nothing answers on {path}" if path else "the plugins' socket is switched off (agent_socket or CALICO_CNI_AGENT_SOCKET empty)"
    return _try_again(
        stdin,
        f"{policy_marker(path or wire.DEFAULT_SOCKET)} says calico-node enforces network policy on this node, and {where}: "
        "a pod created without it would have no network; start calico-node (or remove that file if calico-node is gone for good "
        "and its nftables tables with it)",
        "calico-node did not answer",
    )


def forward(plugin: str, environ=None) -> tuple[int | None, bytes, bytes]:
    """Send this process's request to the agent: (exit code, stdout, stderr), or (None, stdin,
    b"") to run in-process with the stdin already read. VERSION's stdin is never read (nor needed)."""
    # The environment is sent as the kernel gave it (bytes), so nothing is lost in decoding.
    send_env = posix.environ if environ is None else environ
    environ = _str_environ() if environ is None else environ
    stdin = b"" if environ.get("CNI_COMMAND") == "VERSION" else sys.stdin.buffer.read(MAX_STDIN + 1)
    path = socket_path(environ, stdin)
    sock = connect(path) if path else None
    if sock is None:
        # With the socket switched off, the default place of calico-node's marker still counts: a
        # pod made in-process on a node it polices would be dropped all the same.
        if plugin == "calico" and environ.get("CNI_COMMAND") == "ADD" and _exists(policy_marker(path or wire.DEFAULT_SOCKET)):
            return 1, _daemon_needed(stdin, path), b""
        return None, stdin, b""
    try:
        sock.settimeout(ANSWER_TIMEOUT)
        wire.send_request(sock, plugin, send_env, stdin)
        return wire.recv_answer(sock)
    except (OSError, ValueError, wire.Truncated) as exc:
        return 1, _try_again(stdin, f"the request was handed to the agent at {path}: {exc}; it is not run again here"), b""
    finally:
        sock.close()


def main_thin(plugin: str) -> bytes:
    """For a plugin's main(): exit with the agent's answer, or return stdin to run in-process
    (empty for VERSION, which the runner answers without reading it)."""
    code, out, err = forward(plugin)
    if code is None:
        return out
    if err:
        sys.stderr.buffer.write(err)
        sys.stderr.flush()
    sys.stdout.buffer.write(out)
    sys.stdout.flush()
    # Nothing is left to do: end without the interpreter's teardown (see the module docstring).
    posix._exit(code & 0xFF)  # noqa: SLF001 - posix's public _exit
