"""Files the daemon and the installer replace while others may read them."""

from __future__ import annotations

import os
import tempfile


def replace_file(path: str, text: str, mode: int = 0o644) -> None:
    """Write `text` to `path` so that a reader sees the old content or the new, never half of it:
    a temporary file beside it (its directory created), flushed to disk, given `mode`, renamed into
    place. OSError when it cannot be done; no temporary file is left behind."""
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
