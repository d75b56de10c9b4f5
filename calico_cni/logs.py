"""Plugin logging: a file many plugin processes append to at once, rotated by size safely.

Records are written with one `write` on an `O_APPEND` descriptor, so concurrent processes never
interleave within a record. Rotation takes an exclusive `flock` on `<log>.lock` and re-checks that
the file is still the one it measured, so two processes never rotate the same file twice (which
would throw away the records the first rotation kept). Only warnings and errors go to stderr;
stdout is reserved for CNI JSON.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import stat
import sys
import threading
import time
from typing import Any, Mapping

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "warn": logging.WARNING,
    "error": logging.ERROR,
    "fatal": logging.CRITICAL,
    "panic": logging.CRITICAL,
}
_FORMAT = "%(asctime)s.%(msecs)03d [%(levelname)s][%(process)d] %(context)s: %(message)s"


class _Context(logging.Filter):
    def __init__(self, context: str) -> None:
        super().__init__()
        self.context = context

    def filter(self, record: logging.LogRecord) -> bool:
        record.context = self.context
        return True


class _NoTraceback(logging.Formatter):
    """stderr gets one line per record: runtimes show stderr to users; tracebacks stay in the file."""

    def format(self, record: logging.LogRecord) -> str:
        saved = record.exc_info, record.exc_text, record.stack_info
        record.exc_info = record.exc_text = record.stack_info = None
        try:
            return super().format(record)
        finally:
            record.exc_info, record.exc_text, record.stack_info = saved


class RotatingAppendHandler(logging.Handler):
    """Append-only file handler with size-based rotation that is safe across processes."""

    def __init__(self, path: str, max_bytes: int, backups: int, max_age_days: float) -> None:
        super().__init__()
        self.path = path
        self.max_bytes = max_bytes
        self.backups = max(backups, 1)
        self.max_age = max_age_days * 86400
        os.makedirs(os.path.dirname(path) or ".", mode=0o700, exist_ok=True)
        self.fd = self._open()

    def _open(self) -> int:
        # 0600: only root reads plugin logs. O_NONBLOCK so a FIFO at the path cannot hang the
        # plugin; anything but a regular file is refused.
        if os.path.realpath(self.path).startswith(("/proc/", "/sys/")):
            # Files there are kernel interfaces: a log line written to one could change the system.
            raise OSError(errno.EINVAL, "not a place for a log file", self.path)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NONBLOCK, 0o600)
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise OSError(errno.EINVAL, "not a regular file")
            os.set_blocking(fd, True)
        except OSError:
            os.close(fd)
            raise
        return fd

    def _rotate(self, incoming: int) -> None:
        """Rotate if the file (still the one this handler writes) cannot take `incoming` more
        bytes; a file holding nothing yet is never rotated, whatever the record's size."""
        with open(self.path + ".lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                current = os.stat(self.path)
                mine = os.fstat(self.fd)
                if (current.st_dev, current.st_ino) == (mine.st_dev, mine.st_ino) and 0 < current.st_size and current.st_size + incoming > self.max_bytes:
                    for n in range(self.backups - 1, 0, -1):
                        src = f"{self.path}.{n}"
                        if os.path.exists(src):
                            os.replace(src, f"{self.path}.{n + 1}")
                    os.replace(self.path, f"{self.path}.1")
                    cutoff = time.time() - self.max_age
                    for n in range(1, self.backups + 2):
                        old = f"{self.path}.{n}"
                        try:
                            if n > self.backups or (self.max_age > 0 and os.stat(old).st_mtime < cutoff):
                                os.unlink(old)
                        except FileNotFoundError:
                            pass
            except FileNotFoundError:
                pass
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
        os.close(self.fd)
        self.fd = self._open()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            data = (self.format(record) + "\n").encode("utf-8", "replace")
            if self.max_bytes > 0 and os.fstat(self.fd).st_size + len(data) > self.max_bytes:
                self._rotate(len(data))
            os.write(self.fd, data)
        except Exception:  # noqa: BLE001 - logging must never break the plugin
            self.handleError(record)

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 - logging's name
        """A record that cannot be written (disk full, ...) is dropped: no traceback on stderr."""

    def close(self) -> None:
        try:
            os.close(self.fd)
        except OSError:
            pass
        super().close()


def handlers(settings: Mapping[str, Any], context: str, stderr=None) -> tuple[int, list[logging.Handler]]:
    """(level, handlers) for the `log_*` config keys (see config.log_settings): warnings and
    errors to `stderr` (default sys.stderr), everything at the level to the log file, if any."""
    level = _LEVELS.get(str(settings.get("level", "info")).lower(), logging.INFO)
    formatter = logging.Formatter(_FORMAT, "%Y-%m-%d %H:%M:%S")
    ctx = _Context(context)
    err = logging.StreamHandler(sys.stderr if stderr is None else stderr)
    err.setLevel(max(level, logging.WARNING))
    err.setFormatter(_NoTraceback(_FORMAT, "%Y-%m-%d %H:%M:%S"))
    err.addFilter(ctx)
    out: list[logging.Handler] = [err]
    path = settings.get("path")
    if path:
        try:
            handler = RotatingAppendHandler(
                path, int(settings.get("max_size_mb", 100) * 1024 * 1024), int(settings.get("max_count", 10)), float(settings.get("max_age_days", 30))
            )
        except OSError as exc:
            err.handle(logging.LogRecord("calico_cni", logging.WARNING, __file__, 0, "cannot open log file %s: %s; logging to stderr only", (path, exc), None))
            return level, out
        handler.setLevel(level)
        handler.setFormatter(formatter)
        handler.addFilter(ctx)
        out.append(handler)
    return level, out


def setup(settings: Mapping[str, Any], context: str) -> None:
    """Configure the root logger from the `log_*` config keys (see config.log_settings)."""
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
        h.close()
    level, new = handlers(settings, context)
    root.setLevel(level)
    for h in new:
        root.addHandler(h)


# -- the agent: each request logs as the exec'd plugin would, to its own config's file and stderr --

_request = threading.local()


class _PerRequest(logging.Handler):
    """On the root logger of the agent: hands a record to the handlers of the request its thread
    serves (none: the record is the agent's own)."""

    def emit(self, record: logging.LogRecord) -> None:
        for h in getattr(_request, "handlers", None) or ():
            if record.levelno >= h.level:
                h.handle(record)


class _AgentOwn(logging.Filter):
    """Keeps records of request threads out of the agent's own log."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(_request, "handlers", None)


def setup_agent(settings: Mapping[str, Any], context: str) -> None:
    """The agent's logging: its own records per `settings`; request records per request."""
    setup(settings, context)
    root = logging.getLogger()
    for h in root.handlers:
        h.addFilter(_AgentOwn())
    root.setLevel(logging.DEBUG)  # each handler applies its own level
    root.addHandler(_PerRequest())


def start_request(settings: Mapping[str, Any], context: str, stderr) -> None:
    """In the agent, on a request's thread: log to the request's file and `stderr` until
    `end_request`."""
    end_request()
    _request.handlers = handlers(settings, context, stderr)[1]


def end_request() -> None:
    """In the agent, when a request's thread is done: close that request's log handlers."""
    # None once a request ended: a thread that serves another request (a pool) starts from there.
    for h in getattr(_request, "handlers", None) or ():
        h.close()
    _request.handlers = None


def request_log() -> Any:
    """In the agent: the log of the request the calling thread serves (None: none, or not the
    agent), for a helper thread of that request to log to (`log_to`)."""
    return getattr(_request, "handlers", None)


def log_to(request: Any) -> None:
    """On a helper thread of a request: its records go to `request` (`request_log()` of the
    request's thread; None: back to the agent's own log), as the request thread's do. The
    handlers stay the request's: its thread closes them (`end_request`) once its helpers ended."""
    _request.handlers = request
