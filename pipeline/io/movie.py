"""Movie reading for motion correction: MRC/MRCS stacks and TIFF, streamed frame by frame.

A :class:`Movie` opens the file without loading it: MRC stacks are memory-mapped
(mrcfile) and TIFF pages are read one at a time (tifffile), so a 4096², 40-frame movie
never needs more than one raw frame in memory besides the caller's own arrays.
:meth:`Movie.frame` returns one float32 frame with the gain reference multiplied in and
defect pixels replaced.

EER (Falcon 4) is not supported: there is no maintained EER decoder on PyPI; convert with
``relion_convert_to_tiff`` first. Errors are :class:`MovieError` naming the file and
the problem (truncated file, wrong gain shape, a single frame, unsupported type).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from cryofac.errors import CryofacError

MRC_SUFFIXES = (".mrc", ".mrcs", ".st")
TIFF_SUFFIXES = (".tif", ".tiff")


class MovieError(CryofacError):
    """A movie, gain reference or defect map cannot be used."""


def _read_image_2d(path: Path, what: str) -> tuple[np.ndarray, float]:
    """A single 2D image (MRC or TIFF) as float32 with its pixel size (0 if unknown)."""
    if not path.exists():
        raise MovieError(f"{path}: {what} not found")
    suffix = path.suffix.lower()
    try:
        if suffix in TIFF_SUFFIXES:
            import tifffile

            data = tifffile.imread(path)
            pixel = 0.0
        else:
            import mrcfile

            with mrcfile.open(path, mode="r", permissive=False) as handle:
                data = None if handle.data is None else np.array(handle.data)
                pixel = float(handle.voxel_size.x)
            if data is None:
                raise MovieError(f"{path}: {what} holds no data")
            if np.iscomplexobj(data):
                raise MovieError(f"{path}: {what} is complex data, not an image")
    except MovieError:
        raise
    except Exception as exc:  # tifffile raises several types for damaged files
        raise MovieError(f"{path}: unreadable {what} ({exc.__class__.__name__}: {exc})") from None
    data = np.asarray(data)
    if data.ndim == 3 and data.shape[0] == 1:
        data = data[0]
    if data.ndim != 2:
        raise MovieError(f"{path}: {what} must be one 2D image (got shape {data.shape})")
    data = data.astype(np.float32)
    if not np.all(np.isfinite(data)):
        raise MovieError(f"{path}: {what} holds NaN or infinite values")
    return data, pixel


class Movie:
    """A movie opened for streaming. Frames are 0-based here; STAR files count from 1."""

    def __init__(
        self,
        path: str | os.PathLike,
        gain: str | os.PathLike | np.ndarray | None = None,
        defects: str | os.PathLike | np.ndarray | None = None,
    ):
        self.path = Path(path)
        if not self.path.exists():
            raise MovieError(f"{self.path}: file not found")
        suffix = self.path.suffix.lower()
        self._tiff = None
        self._mrc = None
        if suffix == ".eer":
            raise MovieError(
                f"{self.path}: EER movies are not supported (no maintained reader on PyPI); "
                "convert to TIFF first"
            )
        if suffix in TIFF_SUFFIXES:
            self._open_tiff()
        elif suffix in MRC_SUFFIXES:
            self._open_mrc()
        else:
            raise MovieError(f"{self.path}: unknown movie type {suffix!r} (use .mrc/.mrcs/.tiff)")
        if self.n_frames < 2:
            self.close()
            raise MovieError(
                f"{self.path}: movie has {self.n_frames} frame; motion correction needs at least 2"
            )
        self.gain = self._load_gain(gain)
        self.defects = self._load_defects(defects)

    # -- opening -----------------------------------------------------------------
    def _open_mrc(self) -> None:
        import mrcfile

        try:
            handle = mrcfile.mmap(self.path, mode="r", permissive=False)
        except (ValueError, OSError, EOFError) as exc:
            msg = str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
            if "greater than file size" in msg or "too small" in msg.lower():
                size = self.path.stat().st_size
                msg = f"truncated: {size} bytes on disk, fewer than the header's frames need"
            raise MovieError(f"{self.path}: not a readable MRC movie ({msg})") from None
        data = handle.data
        if data is None:
            handle.close()
            raise MovieError(f"{self.path}: MRC file holds no data")
        if np.iscomplexobj(data):
            handle.close()
            raise MovieError(f"{self.path}: complex MRC data is not a movie")
        if data.ndim == 2:
            data = data[None]
        self._mrc = handle
        self._data = data
        self.n_frames = int(data.shape[0])
        self.shape = (int(data.shape[1]), int(data.shape[2]))
        self.pixel_size_A = float(handle.voxel_size.x)

    def _open_tiff(self) -> None:
        import tifffile

        try:
            tif = tifffile.TiffFile(self.path)
            pages = tif.pages
            n = len(pages)
            first = pages[0]
            shape = tuple(int(s) for s in first.shape)
        except Exception as exc:
            raise MovieError(
                f"{self.path}: not a readable TIFF movie ({exc.__class__.__name__}: {exc})"
            ) from None
        if len(shape) != 2:
            tif.close()
            raise MovieError(f"{self.path}: TIFF pages must be 2D frames (got {shape})")
        self._tiff = tif
        self.n_frames = n
        self.shape = (shape[0], shape[1])
        self.pixel_size_A = 0.0

    def _load_gain(self, gain) -> np.ndarray | None:
        if gain is None:
            return None
        if isinstance(gain, np.ndarray):
            data, name = gain.astype(np.float32), "gain"
        else:
            data, _ = _read_image_2d(Path(gain), "gain reference")
            name = str(gain)
        if data.shape != self.shape:
            raise MovieError(
                f"{self.path}: gain reference {name} has shape {data.shape[1]}×{data.shape[0]}, "
                f"movie frames are {self.shape[1]}×{self.shape[0]} (x×y)"
            )
        return data

    def _load_defects(self, defects) -> np.ndarray | None:
        if defects is None:
            return None
        if isinstance(defects, np.ndarray):
            data = defects
        else:
            data, _ = _read_image_2d(Path(defects), "defect map")
        if data.shape != self.shape:
            raise MovieError(
                f"{self.path}: defect map has shape {data.shape}, frames are {self.shape}"
            )
        mask = np.asarray(data) != 0
        return mask if mask.any() else None

    # -- reading -----------------------------------------------------------------
    def raw_frame(self, index: int) -> np.ndarray:
        """Frame ``index`` (0-based) as stored, without gain or defect correction."""
        if not 0 <= index < self.n_frames:
            raise IndexError(f"frame {index} out of range 0..{self.n_frames - 1}")
        try:
            if self._tiff is not None:
                return self._tiff.pages[index].asarray()
            return np.asarray(self._data[index])
        except Exception as exc:
            raise MovieError(
                f"{self.path}: frame {index + 1} unreadable ({exc.__class__.__name__}: {exc})"
            ) from None

    def frame(self, index: int) -> np.ndarray:
        """Frame ``index`` (0-based), float32, gain multiplied in, defects replaced by the mean."""
        data = self.raw_frame(index).astype(np.float32)
        if self.gain is not None:
            data *= self.gain
        if self.defects is not None:
            data[self.defects] = float(data[~self.defects].mean())
        return data

    def __iter__(self) -> Iterator[np.ndarray]:
        for i in range(self.n_frames):
            yield self.frame(i)

    def __len__(self) -> int:
        return self.n_frames

    def close(self) -> None:
        if self._mrc is not None:
            self._mrc.close()
            self._mrc = None
        if self._tiff is not None:
            self._tiff.close()
            self._tiff = None

    def __enter__(self) -> Movie:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
