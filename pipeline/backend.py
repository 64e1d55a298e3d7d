"""One array backend for the whole pipeline: numpy + scipy.fft on CPU, CuPy on GPU.

Call :func:`use` once at start-up (the CLI does it from ``--device``); library
functions then take ``xp = backend.xp()`` and ``fft = backend.fft()`` and run the
same code on either device. Inputs may arrive as numpy arrays; use :func:`asarray`
to move them to the active device and :func:`to_numpy` to bring results back.

The FFT worker count for scipy.fft comes from ``--threads`` (:func:`set_threads`).
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from types import ModuleType
from typing import Any

import numpy as np

from cryofac.errors import CryofacError


class DeviceUnavailable(CryofacError):
    """``--device gpu`` was asked for but no usable GPU/CuPy is present."""


_state: dict[str, Any] = {"device": "cpu", "threads": os.cpu_count() or 1}


def gpu_available() -> tuple[bool, str]:
    """(True, device name) if CuPy imports and sees a GPU, else (False, why not)."""
    try:
        import cupy  # noqa: F401
    except Exception as exc:  # ImportError, or a CUDA library that fails to load
        return False, f"CuPy is not importable ({exc.__class__.__name__}: {exc})".splitlines()[0]
    try:
        count = cupy.cuda.runtime.getDeviceCount()
        if count < 1:
            return False, "CuPy found no CUDA device"
        props = cupy.cuda.runtime.getDeviceProperties(0)
        name = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
        return True, name
    except Exception as exc:
        return False, f"no usable CUDA device ({exc})".splitlines()[0]


def use(device: str = "cpu", threads: int | None = None) -> None:
    """Select the array backend for this process: ``"cpu"`` or ``"gpu"``."""
    if device not in ("cpu", "gpu"):
        raise CryofacError(f"unknown device {device!r} (use cpu or gpu)")
    if device == "gpu":
        ok, why = gpu_available()
        if not ok:
            raise DeviceUnavailable(f"--device gpu: {why}; use --device cpu")
    _state["device"] = device
    if threads is not None:
        set_threads(threads)


def set_threads(threads: int) -> None:
    if threads < 1:
        raise CryofacError(f"--threads must be at least 1 (got {threads})")
    _state["threads"] = int(threads)


def device() -> str:
    return _state["device"]


def threads() -> int:
    return _state["threads"]


def xp() -> ModuleType:
    """The array namespace of the active device (numpy or cupy)."""
    if _state["device"] == "gpu":
        import cupy

        return cupy
    return np


class _ThreadedScipyFFT:
    """scipy.fft with the configured worker count, exposing numpy.fft-like names."""

    def __getattr__(self, name: str):
        import scipy.fft

        func = getattr(scipy.fft, name)
        if name in {"fftfreq", "rfftfreq", "fftshift", "ifftshift", "next_fast_len"}:
            return func

        def call(*args, **kwargs):
            kwargs.setdefault("workers", _state["threads"])
            return func(*args, **kwargs)

        return call


_scipy_fft = _ThreadedScipyFFT()


def fft() -> Any:
    """FFT namespace of the active device: threaded ``scipy.fft`` on CPU, ``cupy.fft`` on GPU."""
    if _state["device"] == "gpu":
        import cupy.fft

        return cupy.fft
    return _scipy_fft


def asarray(array: Any, dtype: Any = None) -> Any:
    """Move ``array`` to the active device (no copy when already there)."""
    return xp().asarray(array, dtype=dtype)


def to_numpy(array: Any) -> np.ndarray:
    """A numpy array from a numpy or cupy array."""
    if hasattr(array, "get"):
        return array.get()
    return np.asarray(array)


@contextmanager
def using(device_name: str, threads_: int | None = None):
    """Temporarily switch backend (tests comparing CPU and GPU results)."""
    saved = dict(_state)
    use(device_name, threads_)
    try:
        yield
    finally:
        _state.update(saved)
