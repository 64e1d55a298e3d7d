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
from pathlib import Path
from typing import Any, TypeVar

import click

T = TypeVar("T")


def option(*decls: str, **attrs: Any) -> Callable:
    """``click.option`` that shows its default in ``--help`` whenever it has one."""
    if attrs.get("default") is not None and not attrs.get("is_flag"):
        attrs.setdefault("show_default", True)
    return click.option(*decls, **attrs)


PATH = click.Path(path_type=Path)
POSITIVE = click.FloatRange(min=0, min_open=True)

#: ``MICROGRAPH...``: the inputs of the per-micrograph steps
micrographs_argument = click.argument("micrographs", nargs=-1, required=True, type=PATH)


def out_option(help: str = "Output folder.") -> Callable:
    """``--out DIR`` (required), passed as ``out_dir``."""
    return option("--out", "out_dir", required=True, type=PATH, help=help)


def header_pixel_size_option(function: Callable) -> Callable:
    """``--pixel-size`` (Å), optional: the MRC header's when not given."""
    return option("--pixel-size", type=POSITIVE, help="Å per pixel [default: MRC header].")(
        function
    )


def optics_options(voltage_help: str = "kV.") -> Callable:
    """``--voltage`` (kV), ``--cs`` (mm) and ``--amplitude-contrast`` of the CTF."""

    def add(function: Callable) -> Callable:
        function = option("--amplitude-contrast", type=click.FloatRange(0, 0.5), default=0.07)(
            function
        )
        function = option("--cs", type=float, default=2.7, help="Spherical aberration, mm.")(
            function
        )
        return option("--voltage", type=float, default=300.0, help=voltage_help)(function)

    return add


def micrograph_inputs(voltage_help: str = "kV.") -> Callable:
    """What every per-micrograph step takes: ``MICROGRAPH...``, ``--out``, ``--pixel-size``
    (default: the MRC header's), the optics (:func:`optics_options`) and the device."""

    def add(function: Callable) -> Callable:
        for decorator in (
            device_options,
            optics_options(voltage_help),
            header_pixel_size_option,
            out_option(),
            micrographs_argument,
        ):
            function = decorator(function)
        return function

    return add


def read_micrograph(path: Path, pixel_size_A: float | None) -> tuple[Any, float]:
    """A 2D micrograph (rows, cols) and its pixel size: ``pixel_size_A`` or the header's."""
    from pipeline.io.mrc import read_mrc

    image, header_px = read_mrc(path)
    if image.ndim == 3 and image.shape[0] == 1:
        image = image[0]
    if image.ndim != 2:
        raise click.ClickException(f"{path}: not a single micrograph (shape {image.shape})")
    px = pixel_size_A or header_px
    if not px or px <= 0:
        raise click.ClickException(f"{path}: no pixel size in the header; give --pixel-size")
    return image, px


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
    finish: Callable[[list[T]], Any] | None = None,
) -> list[T]:
    """Apply ``work`` to every input; report bad ones and fail at the end.

    User-facing errors (``CryofacError``, ``click.ClickException``, ``OSError``,
    ``ValueError``) of one input are printed as ``NAME: message`` and the loop
    goes on; after the loop a :class:`click.ClickException` names how many failed.
    ``finish``, when given, receives the results of the inputs that succeeded (if any) —
    also when others failed or the loop was interrupted — e.g. to write the step's table.
    Returns the results of the inputs that succeeded, in input order.
    """
    from cryofac.errors import CryofacError

    results: list[T] = []
    failed: list[str] = []
    try:
        for item in progress(inputs, total=len(inputs), desc=desc):
            try:
                results.append(work(item))
            except (CryofacError, click.ClickException, OSError, ValueError) as exc:
                message = (
                    exc.format_message() if isinstance(exc, click.ClickException) else str(exc)
                )
                label = name(item)
                if not message.startswith(label):
                    message = f"{label}: {message}"
                click.echo(f"Error: {message}", err=True)
                failed.append(label)
    finally:
        if finish is not None and results:
            finish(results)
    if failed:
        raise click.ClickException(
            f"{len(failed)} of {len(inputs)} inputs failed: {', '.join(failed[:5])}"
            + (" ..." if len(failed) > 5 else "")
        )
    return results
