"""Framing of agent requests and answers on the Unix socket.

Request: a 4-byte big-endian length, then the header: the plugin name and the caller's environment
as NUL-separated `KEY=VALUE` entries (environment bytes as the kernel gave them); then a 4-byte
length and the raw stdin bytes. Answer: a 4-byte signed exit code, then stdout and stderr, each
a 4-byte length and the bytes.

The exec'd plugin imports this module on every run, so it imports nothing at all: no json (8 ms),
no socket or struct. `sock` is anything with `sendall` and `recv` (`socket.socket`, `_socket.socket`).
"""

DEFAULT_SOCKET = "/var/run/calico/cni.sock"
# The socket the plugins use; set but empty: never use the agent.
SOCKET_ENV = "CALICO_CNI_AGENT_SOCKET"
# The network config key naming the socket (the environment variable wins).
SOCKET_KEY = "agent_socket"
HEALTH = "health"
MAX_FRAME = 16 * 1024 * 1024


class Truncated(Exception):
    """The peer closed the connection before a whole frame arrived."""


def _u32(n: int) -> bytes:
    return n.to_bytes(4, "big")


def recv_exact(sock, n: int) -> bytes:
    """Exactly `n` bytes from `sock`, or Truncated."""
    chunks = []
    while n:
        chunk = sock.recv(min(n, 1 << 20))
        if not chunk:
            raise Truncated("connection closed mid-frame")
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def _frame(sock) -> bytes:
    size = int.from_bytes(recv_exact(sock, 4), "big")
    if size > MAX_FRAME:
        raise ValueError(f"frame of {size} bytes is over the limit")
    return recv_exact(sock, size)


def encode_request(plugin: str, env: dict[bytes, bytes] | dict[str, str], stdin: bytes) -> bytes:
    """One request frame. `env` keys and values are bytes (os.environb) or str (UTF-8 encoded)."""
    fields = [plugin.encode()]
    for key, value in env.items():
        if isinstance(key, str):
            key, value = key.encode("utf-8", "surrogateescape"), value.encode("utf-8", "surrogateescape")
        fields.append(key + b"=" + value)
    header = b"\0".join(fields)
    return _u32(len(header)) + header + _u32(len(stdin)) + stdin


def send_request(sock, plugin: str, env: dict, stdin: bytes) -> None:
    """Send one request (see `encode_request`)."""
    sock.sendall(encode_request(plugin, env, stdin))


def recv_request(sock) -> tuple[str, dict[str, str], bytes]:
    """(plugin, environment, stdin) of one request; environment decoded as os.environ decodes it."""
    fields = _frame(sock).split(b"\0")
    try:
        plugin = fields[0].decode("ascii")
    except UnicodeDecodeError:
        raise ValueError("malformed request header") from None
    env: dict[str, str] = {}
    for entry in fields[1:]:
        key, sep, value = entry.partition(b"=")
        if not sep or not key:
            raise ValueError("malformed request header")
        env[key.decode("utf-8", "surrogateescape")] = value.decode("utf-8", "surrogateescape")
    return plugin, env, _frame(sock)


def send_answer(sock, code: int, stdout: bytes, stderr: bytes = b"") -> None:
    """Send the exit code, stdout and stderr of a served request."""
    sock.sendall(code.to_bytes(4, "big", signed=True) + _u32(len(stdout)) + stdout + _u32(len(stderr)) + stderr)


def recv_answer(sock) -> tuple[int, bytes, bytes]:
    """(exit code, stdout, stderr) of one answer."""
    code = int.from_bytes(recv_exact(sock, 4), "big", signed=True)
    return code, _frame(sock), _frame(sock)
