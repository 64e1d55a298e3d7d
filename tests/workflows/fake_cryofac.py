"""A stand-in ``cryofac`` with the step commands' file contract (CONTRACT.md) and no science.

Used to test the workflow's orchestration (batching, per-movie failures,
re-entrancy, SIGTERM) in seconds. It writes the files the real steps write,
with values derived from the input names, so reruns give identical bytes:

- a movie whose content starts with ``CORRUPT`` fails like a bad input
  (``Error: NAME: ...`` then ``N of M inputs failed``, exit 1);
- ``FAKE_CRYOFAC_SLEEP`` (seconds) slows each step down, for kill tests;
- every call is appended to ``$FAKE_CRYOFAC_CALLS`` (if set) as ``step input...``;
- ``FAKE_CRYOFAC_HANG_ONCE=STEP:MARKER:SECONDS`` makes the first call of STEP (while
  MARKER does not exist; it is created) hang for SECONDS, like a stuck job, for
  time-limit tests; later calls (the retry) run normally.
- fault injection: ``FAKE_CRYOFAC_BAD_GAIN=1`` fails every movie of motion correction
  as a content error (a gain reference of the wrong shape); while the file named by
  ``FAKE_CRYOFAC_DISK_FULL`` exists, motion correction fails each movie with the
  ``OSError`` of a full disk (``[Errno 28] No space left on device``), as the real
  step reports it; ``FAKE_CRYOFAC_RECON_SLEEP`` (seconds) slows the reconstruction.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import starfile


def _value(name: str, low: float, high: float) -> float:
    digest = int(hashlib.sha256(name.encode()).hexdigest()[:8], 16)
    return round(low + (high - low) * digest / 0xFFFFFFFF, 3)


def _stem(path: str) -> str:
    name = os.path.basename(path)
    for ext in (".mrcs", ".mrc", ".tiff", ".tif"):
        if name.endswith(ext):
            return name[: -len(ext)]
    return name


def _options(argv: list[str]) -> tuple[list[str], dict[str, str]]:
    positional, options = [], {}
    i = 0
    while i < len(argv):
        if argv[i].startswith("--"):
            options[argv[i][2:]] = argv[i + 1]
            i += 2
        else:
            positional.append(argv[i])
            i += 1
    return positional, options


def _write_mrc(path: Path, data: np.ndarray) -> None:
    import mrcfile

    tmp = path.with_name(f".{path.name}.tmp")
    with mrcfile.new(tmp, overwrite=True) as mrc:
        mrc.set_data(data.astype(np.float32))
    os.replace(tmp, path)


def _star(path: Path, blocks: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    starfile.write(blocks, tmp, overwrite=True)
    os.replace(tmp, path)


def motioncorr(inputs, out: Path) -> list[str]:
    failed, rows = [], []
    full = os.environ.get("FAKE_CRYOFAC_DISK_FULL")
    for movie in inputs:
        if full and os.path.exists(full):
            error = OSError(28, os.strerror(28), str(out / f"{_stem(movie)}.mrc"))
            print(f"Error: {os.path.basename(movie)}: {error}", file=sys.stderr)
            failed.append(movie)
            continue
        if os.environ.get("FAKE_CRYOFAC_BAD_GAIN"):
            print(
                f"Error: {os.path.basename(movie)}: gain reference is 4096x4096, frames 8x8",
                file=sys.stderr,
            )
            failed.append(movie)
            continue
        if Path(movie).read_bytes()[:7] == b"CORRUPT":
            print(f"Error: {os.path.basename(movie)}: not an MRC or TIFF movie", file=sys.stderr)
            failed.append(movie)
            continue
        stem = _stem(movie)
        _write_mrc(out / f"{stem}.mrc", np.full((8, 8), _value(stem, 0, 1)))
        _write_mrc(out / f"{stem}_noDW.mrc", np.full((8, 8), _value(stem, 0, 1)))
        _star(
            out / f"{stem}_shifts.star",
            {
                "global_shift": pd.DataFrame(
                    {
                        "rlnMicrographFrameNumber": [1, 2],
                        "rlnMicrographShiftX": [0.0, _value(stem, -1, 1)],
                        "rlnMicrographShiftY": [0.0, _value(stem + "y", -1, 1)],
                    }
                )
            },
        )
        rows.append(
            {
                "rlnMicrographName": str(out / f"{stem}.mrc"),
                "rlnAccumMotionTotal": _value(stem, 5, 20),
                "rlnAccumMotionEarly": _value(stem, 2, 5),
                "rlnAccumMotionLate": _value(stem, 3, 15),
            }
        )
    if rows:
        _star(out / "corrected_micrographs.star", {"micrographs": pd.DataFrame(rows)})
    return failed


def ctf(inputs, out: Path) -> list[str]:
    rows = []
    for mic in inputs:
        stem = _stem(mic)
        u = _value(stem, 10000, 25000)
        rows.append(
            {
                "rlnMicrographName": mic,
                "rlnDefocusU": u,
                "rlnDefocusV": u - _value(stem, 0, 500),
                "rlnDefocusAngle": _value(stem, -90, 90),
                "rlnCtfMaxResolution": _value(stem, 3, 5),
                "rlnCtfFigureOfMerit": _value(stem, 0.1, 0.3),
            }
        )
    _star(out / "micrographs_ctf.star", {"micrographs": pd.DataFrame(rows)})
    return []


def pick(inputs, out: Path) -> list[str]:
    for mic in inputs:
        stem = _stem(mic)
        n = 3 + int(_value(stem, 0, 2.99))
        _star(
            out / f"{stem}_autopick.star",
            {
                "": pd.DataFrame(
                    {
                        "rlnCoordinateX": [10.0 * (k + 1) for k in range(n)],
                        "rlnCoordinateY": [20.0] * n,
                        "rlnAutopickFigureOfMerit": [1.0] * n,
                    }
                )
            },
        )
    return []


def extract(options: dict, out: Path) -> None:
    from pipeline.io.particles import ParticleTable, make_optics, write_particles_star

    micrographs = starfile.read(options["micrographs"], always_dict=True)
    table = next(t for t in micrographs.values() if "rlnMicrographName" in t.columns)
    box = int(options["box"])
    rows, images = [], []
    stack = "particles.mrcs"
    if options.get("paths-relative-to"):  # as the real step: paths from that folder
        stack = os.path.relpath(out / stack, options["paths-relative-to"])
    for mic in table.to_dict("records"):
        stem = _stem(mic["rlnMicrographName"])
        coords = starfile.read(Path(options["coords"]) / f"{stem}_autopick.star")
        for k, c in enumerate(coords.to_dict("records")):
            rows.append(
                {
                    "rlnImageName": f"{len(images) + 1}@{stack}",
                    "rlnMicrographName": mic["rlnMicrographName"],
                    "rlnCoordinateX": c["rlnCoordinateX"],
                    "rlnCoordinateY": c["rlnCoordinateY"],
                    "rlnOpticsGroup": 1,
                    "rlnDefocusU": mic["rlnDefocusU"],
                    "rlnDefocusV": mic["rlnDefocusV"],
                    "rlnDefocusAngle": mic["rlnDefocusAngle"],
                }
            )
            images.append(np.full((box, box), _value(f"{stem}{k}", 0, 1)))
    if not rows:
        return
    _write_mrc(out / "particles.mrcs", np.stack(images))
    optics = make_optics(pixel_size_A=1.0, box_px=box)
    write_particles_star(out / "particles.star", ParticleTable(optics, pd.DataFrame(rows)))


def reconstruct(star: str, out: Path, symmetry: str = "C1") -> None:
    from pipeline.io.particles import read_particles_star
    from pipeline.reconstruction.particles import load_particles

    time.sleep(float(os.environ.get("FAKE_CRYOFAC_RECON_SLEEP", "0")))
    table = read_particles_star(star)
    load_particles(star)  # every stack the STAR names must be readable from here
    n = len(table)
    _write_mrc(out / "map.mrc", np.full((4, 4, 4), float(n)))
    for half in ("half1", "half2"):
        _write_mrc(out / f"{half}.mrc", np.full((4, 4, 4), float(n)))
    tmp = out / ".result.json.tmp"
    result = {"resolution_A": round(40.0 / np.sqrt(n), 3), "particles": n, "symmetry": symmetry}
    tmp.write_text(json.dumps(result))
    os.replace(tmp, out / "result.json")


def main(argv: list[str]) -> int:
    step, rest = argv[0], argv[1:]
    inputs, options = _options(rest)
    if os.environ.get("FAKE_CRYOFAC_CALLS"):
        with open(os.environ["FAKE_CRYOFAC_CALLS"], "a") as fh:
            fh.write(" ".join([step, *[os.path.basename(i) for i in inputs]]) + "\n")
    time.sleep(float(os.environ.get("FAKE_CRYOFAC_SLEEP", "0")))
    if os.environ.get("FAKE_CRYOFAC_HANG_ONCE"):
        hang_step, marker, seconds = os.environ["FAKE_CRYOFAC_HANG_ONCE"].rsplit(":", 2)
        if hang_step == step and not os.path.exists(marker):
            Path(marker).write_text(f"{os.getpid()}\n")
            time.sleep(float(seconds))
    out = Path(options["out"])
    out.mkdir(parents=True, exist_ok=True)
    failed: list[str] = []
    if step == "motioncorr":
        failed = motioncorr(inputs, out)
    elif step == "ctf":
        failed = ctf(inputs, out)
    elif step == "pick":
        failed = pick(inputs, out)
    elif step == "extract":
        extract(options, out)
    elif step == "reconstruct":
        reconstruct(inputs[0], out, options.get("symmetry", "C1"))
    else:
        print(f"Error: no such command {step}", file=sys.stderr)
        return 2
    if failed:
        names = ", ".join(os.path.basename(f) for f in failed)
        print(f"Error: {len(failed)} of {len(inputs)} inputs failed: {names}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
