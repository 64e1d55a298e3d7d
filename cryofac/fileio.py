"""One way to write a file so that readers never see half of it: :func:`atomic_write`.

A temporary file in the destination's folder, fsync, rename over the destination.
The result gets the mode an ordinary ``open(path, "w")`` would give it under the
process's umask (``0o666 & ~umask``: group-readable under the usual 022 or 002),
not the 0600 of :func:`tempfile.mkstemp`. Standard library only: the leaf core
that ``pipeline``, ``workflows``, ``portal`` and ``instrument_env`` may all import.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any


def umask_mode(base: int = 0o666) -> int:
    """``base`` with the process's umask applied (the mode ``open()`` would create)."""
    current = os.umask(0)
    os.umask(current)
    return base & ~current


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = ".tmp") -> Iterator[Path]:
    """A temporary path beside ``path``; renamed over ``path`` when the block succeeds.

    For writers that want a file name (mrcfile, starfile, numpy.savez). ``suffix``
    is the temporary file's extension (some writers add their own, e.g. ``.npz``).
    On an exception the temporary file is removed and ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, umask_mode())
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write(
    path: str | os.PathLike,
    data: str | bytes | Callable[[IO[Any]], Any],
    *,
    encoding: str = "utf-8",
    newline: str | None = None,
) -> Path:
    """Write ``data`` to ``path`` atomically (temp file in the same folder, fsync, rename).

    ``data`` is text, bytes, or a function that writes to the open binary handle.
    The file's mode follows the umask (``0o666 & ~umask``). Returns ``path``.
    """
    path = Path(path)
    with atomic_path(path) as tmp:
        if isinstance(data, str):
            with open(tmp, "w", encoding=encoding, newline=newline) as handle:
                handle.write(data)
        elif isinstance(data, bytes | bytearray | memoryview):
            with open(tmp, "wb") as handle:
                handle.write(data)
        else:
            with open(tmp, "wb") as handle:
                data(handle)
    return path
