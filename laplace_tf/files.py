"""Writing files so that a crash never leaves a half-written one: write a temporary file, then rename.

Example:
    ```python
    >>> write_atomically("report.json", lambda f: f.write(b"{}"))
    ```
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO


def write_atomically(path: str | os.PathLike, write: Callable[[IO[bytes]], object]) -> Path:
    """Calls ``write`` on a temporary file next to ``path`` and renames it to ``path`` once complete.

    The rename is atomic on POSIX and Windows, so readers see either the old file or the whole
    new one; on error the temporary file is removed and ``path`` is untouched.
    """

    def write_file(name: str) -> None:
        with open(name, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())

    return replace_atomically(path, write_file)


def replace_atomically(path: str | os.PathLike, write_to: Callable[[str], object]) -> Path:
    """Like `write_atomically` for writers that need a file name (e.g. ``to_netcdf``)."""
    path = Path(path)
    if not path.parent.exists():
        raise FileNotFoundError(f"The directory {str(path.parent)!r} does not exist; create it first.")
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    try:
        write_to(temporary)
        os.chmod(temporary, _mode_for(path))
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def _mode_for(path: Path) -> int:
    """The existing file's permissions, or the usual ones for a new file (0o666 less the umask)."""
    if path.exists():
        return path.stat().st_mode & 0o777
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask
