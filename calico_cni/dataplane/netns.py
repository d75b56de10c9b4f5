"""Network namespace handles.

Namespaces are per thread. Work that must happen inside another namespace (opening its netlink
socket, writing its sysctls) runs on a short-lived thread that enters it and then ends; the calling
thread, which owns the etcd channel, never changes namespace, so gRPC's connections are always made
from the node's namespace. A netlink socket keeps acting in the namespace it was created in, so
after that the calling thread drives it directly.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import os
import stat
import threading
from typing import Any, Callable, Iterator, TypeVar

from calico_cni.dataplane.errors import NamespaceError
from calico_cni.dataplane.rtnl import Rtnl

CLONE_NEWNET = 0x40000000
NS_GET_NSTYPE = 0xB703
T = TypeVar("T")
_setns = None


def _libc_setns(fd: int) -> None:
    global _setns
    if _setns is None:
        libc = ctypes.CDLL(None, use_errno=True)
        _setns = (libc.setns, ctypes.get_errno)
    setns, get_errno = _setns
    if setns(fd, CLONE_NEWNET) != 0:
        err = get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


_serving = threading.local()


@contextlib.contextmanager
def serving(fd: int | None, path: str) -> Iterator[None]:
    """For the agent: on this thread, `Netns.here()` is the namespace open at `fd` (the caller's,
    at `path`), not the thread's own. The thread itself never enters it, so the etcd channel it
    drives stays in the agent's namespace; None (the caller shares the agent's) changes nothing."""
    if fd is None:
        yield
        return
    _serving.caller = (fd, path)
    try:
        yield
    finally:
        _serving.caller = None


class Netns:
    """An open network namespace."""

    def __init__(self, fd: int, path: str, current: bool) -> None:
        self.fd = fd
        self.path = path
        self.current = current
        self._rtnl: Rtnl | None = None

    @classmethod
    def here(cls) -> "Netns":
        """The node's namespace: the calling thread's in the exec'd plugin; in the agent, the
        namespace of the plugin process it serves (see `serving`)."""
        caller = getattr(_serving, "caller", None)
        if caller is not None:
            fd, path = caller
            return cls(os.dup(fd), path, False)
        return cls(os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC), "/proc/thread-self/ns/net", True)

    @classmethod
    def open(cls, path: str) -> "Netns | None":
        """The namespace at `path` (CNI_NETNS); None when it no longer exists.

        Raises error 4 when the path is not a network namespace, or is the caller's own.
        """
        try:
            # A namespace file is a regular (nsfs) file. Anything else (a FIFO, a device) is refused
            # without opening it; O_NONBLOCK covers a swap between this check and the open.
            if not stat.S_ISREG(os.stat(path).st_mode):
                raise NamespaceError(f"CNI_NETNS {path!r} is not a network namespace", "it is not a namespace file")
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            raise NamespaceError(f"CNI_NETNS {path!r} cannot be opened", exc.strerror or str(exc)) from None
        try:
            kind = fcntl.ioctl(fd, NS_GET_NSTYPE)
        except OSError:
            kind = None
        if kind != CLONE_NEWNET:
            os.close(fd)
            raise NamespaceError(f"CNI_NETNS {path!r} is not a network namespace")
        ns = cls(fd, path, False)
        if ns.same_as_caller():
            ns.close()
            raise NamespaceError(
                f"CNI_NETNS {path!r} is the plugin's own network namespace",
                "a container needs a namespace of its own; refusing to configure the node's interfaces as a container's",
            )
        return ns

    def same_as_caller(self) -> bool:
        """Whether this is the node's namespace (`here`)."""
        caller = getattr(_serving, "caller", None)
        mine = os.fstat(caller[0]) if caller is not None else os.stat("/proc/thread-self/ns/net")
        st = os.fstat(self.fd)
        return (st.st_dev, st.st_ino) == (mine.st_dev, mine.st_ino)

    def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Call `fn(*args)` inside this namespace (on a thread of its own unless it is the caller's)."""
        if self.current:
            return fn(*args)
        box: dict[str, Any] = {}

        def target() -> None:
            try:
                _libc_setns(self.fd)
                box["result"] = fn(*args)
            except BaseException as exc:  # noqa: BLE001 - re-raised in the caller
                box["error"] = exc

        thread = threading.Thread(target=target, name=f"netns {self.path}", daemon=True)
        thread.start()
        thread.join()
        if "error" in box:
            raise box["error"]
        return box["result"]

    def rtnl(self) -> Rtnl:
        """A netlink socket acting in this namespace (created once)."""
        if self._rtnl is None:
            self._rtnl = self.run(Rtnl.open)
        return self._rtnl

    def close(self) -> None:
        """Close the netlink socket (if one was opened) and the namespace's file descriptor; idempotent."""
        if self._rtnl is not None:
            self._rtnl.close()
            self._rtnl = None
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> "Netns":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
