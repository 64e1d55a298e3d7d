"""Tab-separated tables of a run folder (``movies.tsv``, ``status.tsv``, ``cluster_jobs.tsv``):
read, format and write atomically. Standard library and the core only, so every module
of ``workflows`` may use it."""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable, Mapping
from typing import Any

from cryofac.fileio import atomic_write


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` atomically (:func:`cryofac.fileio.atomic_write`, mode from the umask)."""
    atomic_write(path, text, newline="")


def read_tsv(path: str | os.PathLike) -> list[dict[str, str]]:
    """Rows of a tab-separated file with a header; [] when it does not exist."""
    try:
        with open(path, newline="") as fh:
            return list(csv.DictReader(fh, delimiter="\t"))
    except FileNotFoundError:
        return []


def format_tsv(rows: Iterable[Mapping[str, Any]], columns: Iterable[str]) -> str:
    columns = list(columns)
    lines = ["\t".join(columns)]
    for row in rows:
        cells = []
        for c in columns:
            value = row.get(c)
            if value is None or value == "":
                cells.append("")
            elif isinstance(value, float):
                cells.append(f"{value:.6g}")
            else:
                cells.append(str(value).replace("\t", " ").replace("\n", " "))
        lines.append("\t".join(cells))
    return "\n".join(lines) + "\n"
