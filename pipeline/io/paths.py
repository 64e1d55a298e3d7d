"""Where the file paths inside STAR and ``.cs`` files point.

RELION writes every path relative to its project folder and runs there; cryoSPARC's
``blob/path`` and ``location/micrograph_path`` are relative to the project directory
(``J42/extract/x_particles.mrc``, the path cryosparc-tools' ``download_mrc`` takes).
The workflow's run folder is that project folder: its STAR and ``.cs`` files name
files relative to it (:func:`relative_to_root`).

Files written before (by cryofac up to issue 18, or by hand) named stacks relative to
the STAR file's own folder. :func:`resolve_data_path` reads both: the STAR file's
folder, then each folder above it (the run folder is one of them), then the working
folder.
"""

from __future__ import annotations

import os
from pathlib import Path


def resolve_data_path(
    name: str | os.PathLike, star_path: str | os.PathLike | None = None, root=None
) -> Path:
    """The file that ``name`` (a path from a STAR or ``.cs`` file) refers to.

    Absolute names are returned as they are. A relative name is looked up under
    ``root`` (when given), the folder of ``star_path`` and every folder above it,
    then the working folder; the first that exists wins. When none exists the name
    under the STAR file's folder (or as given) is returned, for the caller's error.
    """
    path = Path(name)
    if path.is_absolute():
        return path
    candidates: list[Path] = []
    if root is not None:
        candidates.append(Path(root) / path)
    if star_path is not None:
        folder = Path(star_path).absolute().parent
        candidates += [folder / path, *(parent / path for parent in folder.parents)]
    candidates.append(path)
    for candidate in candidates:
        if candidate.exists():
            return candidate
    return Path(star_path).parent / path if star_path is not None else path


def relative_to_root(path: str | os.PathLike, root: str | os.PathLike) -> str:
    """``path`` relative to ``root`` when it lies inside it, else absolute."""
    absolute = Path(os.path.abspath(path))
    base = Path(os.path.abspath(root))
    try:
        return absolute.relative_to(base).as_posix()
    except ValueError:
        return absolute.as_posix()


def split_image_name(name: str) -> tuple[str, str]:
    """``"12@stack.mrcs"`` -> ``("12", "stack.mrcs")``; a bare path -> ``("", path)``."""
    index, sep, stack = str(name).partition("@")
    return (index, stack) if sep else ("", index)


def rebase_image_name(name: str, star_path, root) -> str:
    """``N@stack`` with the stack path made relative to ``root`` (RELION's project folder)."""
    index, stack = split_image_name(name)
    target = relative_to_root(resolve_data_path(stack, star_path, root=None), root)
    return f"{index}@{target}" if index else target
