"""Shared pieces of the pipeline step commands (``cryofac motioncorr``, ``ctf``, ...).

Every step follows the contract: ``--device cpu|gpu``, ``--threads N``, a progress
bar on a terminal, and when one input is bad the remaining inputs are still
processed; the bad ones are named and the command exits non-zero at the end.
This module imports only click and the standard library so ``--help`` is fast.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

import click

T = TypeVar("T")


def device_options(function: Callable) -> Callable:
    """Add ``--device`` and ``--threads`` to a step command."""
    function = click.option(
        "--threads",
        type=click.IntRange(min=1),
        default=None,
        help="CPU threads for FFTs and batches [default: all cores].",
    )(function)
    function = click.option(
        "--device",
        type=click.Choice(["cpu", "gpu"]),
        default="cpu",
        show_default=True,
        help="Array backend: numpy/scipy (cpu) or CuPy (gpu).",
    )(function)
    return function


def select_device(device: str, threads: int | None) -> None:
    """Activate the backend; a missing GPU becomes a one-line user error."""
    from pipeline import backend

    try:
        backend.use(device, threads if threads is not None else (os.cpu_count() or 1))
    except backend.DeviceUnavailable as exc:
        raise click.ClickException(str(exc)) from None


def progress(items: Iterable[T], total: int | None = None, desc: str = "") -> Iterable[T]:
    """A tqdm progress bar on a terminal (stderr), silent otherwise."""
    from tqdm import tqdm

    return tqdm(
        items,
        total=total,
        desc=desc,
        unit="item",
        disable=not sys.stderr.isatty(),
        file=sys.stderr,
        dynamic_ncols=True,
    )


def run_each(
    inputs: Sequence[Any],
    work: Callable[[Any], T],
    desc: str,
    name: Callable[[Any], str] = str,
) -> list[T]:
    """Apply ``work`` to every input; report bad ones and fail at the end.

    User-facing errors (``CryofacError``, ``click.ClickException``, ``OSError``,
    ``ValueError``) of one input are printed as ``NAME: message`` and the loop
    goes on; after the loop a :class:`click.ClickException` names how many failed.
    Returns the results of the inputs that succeeded, in input order.
    """
    from cryofac.errors import CryofacError

    results: list[T] = []
    failed: list[str] = []
    for item in progress(inputs, total=len(inputs), desc=desc):
        try:
            results.append(work(item))
        except (CryofacError, click.ClickException, OSError, ValueError) as exc:
            message = exc.format_message() if isinstance(exc, click.ClickException) else str(exc)
            label = name(item)
            if not message.startswith(label):
                message = f"{label}: {message}"
            click.echo(f"Error: {message}", err=True)
            failed.append(label)
    if failed:
        raise click.ClickException(
            f"{len(failed)} of {len(inputs)} inputs failed: {', '.join(failed[:5])}"
            + (" ..." if len(failed) > 5 else "")
        )
    return results
