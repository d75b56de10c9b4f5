"""Framing of agent requests and answers on the Unix socket.

Request: a 4-byte big-endian length and a JSON header {"plugin": str, "env": {str: str}}, then a
4-byte length and the raw stdin bytes. Answer: a 4-byte exit code and a 4-byte length, then stdout.
Standard library only: the exec'd plugin imports this module on every run.
"""

from __future__ import annotations

import json
import socket
import struct

DEFAULT_SOCKET = "/var/run/calico/cni.sock"
# The socket the plugins use; set but empty: never use the agent.
SOCKET_ENV = "CALICO_CNI_AGENT_SOCKET"
# The network config key naming the socket (the environment variable wins).
SOCKET_KEY = "agent_socket"
HEALTH = "health"
MAX_FRAME = 16 * 1024 * 1024
_LEN = struct.Struct("!I")
_ANSWER = struct.Struct("!iI")


class Truncated(Exception):
    """The peer closed the connection before a whole frame arrived."""


def recv_exact(sock: socket.socket, n: int) -> bytes:
    """Exactly `n` bytes from `sock`, or Truncated."""
    chunks = []
    while n:
        chunk = sock.recv(min(n, 1 << 20))
        if not chunk:
            raise Truncated("connection closed mid-frame")
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def _frame(sock: socket.socket) -> bytes:
    (size,) = _LEN.unpack(recv_exact(sock, _LEN.size))
    if size > MAX_FRAME:
        raise ValueError(f"frame of {size} bytes is over the limit")
    return recv_exact(sock, size)


def send_request(sock: socket.socket, plugin: str, env: dict[str, str], stdin: bytes) -> None:
    header = json.dumps({"plugin": plugin, "env": env}).encode()
    sock.sendall(_LEN.pack(len(header)) + header + _LEN.pack(len(stdin)) + stdin)


def recv_request(sock: socket.socket) -> tuple[str, dict[str, str], bytes]:
    header = json.loads(_frame(sock))
    plugin, env = header.get("plugin"), header.get("env")
    if not isinstance(plugin, str) or not isinstance(env, dict) or not all(isinstance(v, str) for v in env.values()):
        raise ValueError("malformed request header")
    return plugin, env, _frame(sock)


def send_answer(sock: socket.socket, code: int, stdout: bytes) -> None:
    sock.sendall(_ANSWER.pack(code, len(stdout)) + stdout)


def recv_answer(sock: socket.socket) -> tuple[int, bytes]:
    code, size = _ANSWER.unpack(recv_exact(sock, _ANSWER.size))
    if size > MAX_FRAME:
        raise ValueError(f"answer of {size} bytes is over the limit")
    return code, recv_exact(sock, size)
