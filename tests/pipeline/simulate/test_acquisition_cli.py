"""EPU-like acquisitions and the `cryofac simulate` commands (including bad input)."""

from __future__ import annotations

import json
import os
import time

import mrcfile
import numpy as np
import pytest
import starfile
import tifffile

from cryofac.cli import main
from pipeline.simulate import SimulationError, simulate_acquisition

SMALL = dict(movie_shape=(192, 192), n_frames=4, pixel_size_A=2.5, particles_per_movie=2)


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    raw = tmp_path_factory.mktemp("raw")
    paths = simulate_acquisition(raw, 3, seed=5, progress=False, **SMALL)
    return raw, paths


def test_session_folder_looks_like_epu_and_opens(session):
    raw, paths = session
    names = [p.name for p in paths]
    assert names == sorted(names) and len(names) == 3
    assert all(n.startswith("FoilHole_") and n.endswith("_fractions.tiff") for n in names)
    assert not [p for p in raw.iterdir() if p.name.startswith(".")]  # no temporary files left
    gain = mrcfile.read(raw / "gain.mrc")
    meta = json.loads((raw / "acquisition.json").read_text())
    assert meta["pixel_size_A"] == 2.5 and meta["n_frames"] == 4 and meta["seed"] == 5
    for path in paths:
        frames = tifffile.imread(path)
        assert frames.shape == (4, 192, 192) and frames.dtype == np.uint8
        assert (frames * gain).mean() == pytest.approx(1.0 * 2.5**2, rel=0.03)
        assert (raw / (path.name.replace("_fractions.tiff", ".xml"))).exists()
    with mrcfile.open(raw / "truth" / "truth_map.mrc") as handle:
        assert handle.voxel_size.x == pytest.approx(2.5)
        assert handle.data.shape[0] == handle.data.shape[1] == handle.data.shape[2]


def test_truth_records_match_each_other(session):
    raw, paths = session
    stem = paths[1].name[: -len(".tiff")]
    record = json.loads((raw / "truth" / f"{stem}.json").read_text())
    drift = np.asarray(record["drift_px"])
    assert drift.shape == (4, 2) and np.all(drift[0] == 0)
    shifts = starfile.read(raw / "truth" / f"{stem}_shifts.star")["global_shift"]
    assert list(shifts["rlnMicrographFrameNumber"]) == [1, 2, 3, 4]
    np.testing.assert_allclose(shifts["rlnMicrographShiftX"], -drift[:, 0], atol=1e-5)
    coords = starfile.read(raw / "truth" / f"{stem}_coords.star")
    coords = coords if not isinstance(coords, dict) else coords["particles"]
    np.testing.assert_allclose(
        coords["rlnCoordinateX"], np.asarray(record["micrograph"]["coords_px"])[:, 0], atol=1e-5
    )
    ctf = starfile.read(raw / "truth" / "micrographs_ctf.star")
    assert list(ctf["rlnMicrographName"]) == [p.name for p in paths]
    assert np.all(ctf["rlnDefocusU"] >= ctf["rlnDefocusV"])
    assert ctf["rlnDefocusU"][1] == pytest.approx(record["micrograph"]["ctf"]["defocus_u_A"])


def test_continuing_an_acquisition_reproduces_the_same_movies(session, tmp_path):
    raw, paths = session
    again = simulate_acquisition(tmp_path, 1, seed=5, start_index=1, progress=False, **SMALL)
    assert again[0].name == paths[1].name
    np.testing.assert_array_equal(tifffile.imread(again[0]), tifffile.imread(paths[1]))
    np.testing.assert_array_equal(
        mrcfile.read(tmp_path / "gain.mrc"), mrcfile.read(raw / "gain.mrc")
    )


def test_movies_land_over_time_with_an_interval(tmp_path):
    paths = simulate_acquisition(
        tmp_path,
        2,
        seed=1,
        interval_s=0.6,
        naming="plain",
        movie_format="mrcs",
        progress=False,
        **SMALL,
    )
    assert [p.name for p in paths] == ["movie_00001.mrcs", "movie_00002.mrcs"]
    assert os.path.getmtime(paths[1]) - os.path.getmtime(paths[0]) > 0.4
    with mrcfile.open(paths[0]) as handle:
        assert handle.data.shape == (4, 192, 192)


def test_bad_acquisition_parameters(tmp_path):
    with pytest.raises(SimulationError):
        simulate_acquisition(tmp_path, 0, **SMALL)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(SimulationError, match="cannot write"):
        simulate_acquisition(blocker / "raw", 1, **SMALL)


def _cli(capsys, *args):
    code = main(["simulate", *map(str, args)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cli_commands_write_readable_outputs(tmp_path, capsys):
    code, out, _ = _cli(
        capsys, "volume", "--out", tmp_path / "v.mrc", "--box", 32, "--pixel-size", 5
    )
    assert code == 0 and "v.mrc" in out
    assert mrcfile.read(tmp_path / "v.mrc").shape == (32, 32, 32)
    code, _, _ = _cli(
        capsys,
        "particles",
        "--out",
        tmp_path / "p",
        "-n",
        5,
        "--box",
        32,
        "--pixel-size",
        5,
        "--seed",
        1,
    )
    assert code == 0
    assert len(starfile.read(tmp_path / "p" / "particles.star")["particles"]) == 5
    code, _, _ = _cli(
        capsys,
        "micrographs",
        "--out",
        tmp_path / "m",
        "-n",
        1,
        "--size",
        128,
        "--pixel-size",
        5,
        "--particles",
        2,
        "--seed",
        1,
    )
    assert code == 0
    assert mrcfile.read(tmp_path / "m" / "micrograph_0001.mrc").shape == (128, 128)
    assert (tmp_path / "m" / "truth" / "micrograph_0001_coords.star").exists()
    start = time.monotonic()
    code, out, _ = _cli(
        capsys,
        "acquisition",
        tmp_path / "raw",
        "--movies",
        2,
        "--frames",
        3,
        "--size",
        128,
        "--pixel-size",
        5,
        "--seed",
        2,
    )
    assert code == 0 and "2 movies" in out
    assert time.monotonic() - start < 60
    assert len(list((tmp_path / "raw").glob("*_fractions.tiff"))) == 2


@pytest.mark.parametrize(
    "args, message",
    [
        (["volume", "--out", "{tmp}/v.mrc", "--pixel-size", "-1"], "pixel-size"),
        (["particles", "--out", "{tmp}/p", "--snr", "0"], "snr"),
        (["acquisition", "{tmp}/file/raw", "--movies", "1"], "file"),
        (["acquisition", "{tmp}/raw", "--movies", "0"], "movies"),
        (["micrographs", "--out", "{tmp}/m", "--defocus-range", "9000", "-5"], "defocus-range"),
    ],
)
def test_cli_rejects_bad_input_with_one_line(tmp_path, capsys, args, message):
    (tmp_path / "file").write_text("not a folder")
    code, out, err = _cli(capsys, *[a.format(tmp=tmp_path) for a in args])
    assert code != 0
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error:")
    assert message in lines[0] and "Traceback" not in err


@pytest.mark.slow
def test_default_four_movie_acquisition_opens(tmp_path, capsys):
    """`cryofac simulate acquisition --movies 4` with the defaults writes readable movies.

    Its speed is measured in benchmarks/bench_simulate.py, not asserted here."""
    code, _, err = _cli(capsys, "acquisition", tmp_path, "--movies", 4, "--seed", 3)
    assert code == 0, err
    movies = sorted(tmp_path.glob("*_fractions.tiff"))
    assert len(movies) == 4
    gain = mrcfile.read(tmp_path / "gain.mrc")
    frames = tifffile.imread(movies[0])
    assert frames.shape == (20, 1024, 1024)
    meta = json.loads((tmp_path / "acquisition.json").read_text())  # configuration defaults
    expected = meta["dose_per_frame_e_A2"] * meta["pixel_size_A"] ** 2
    assert (frames * gain).mean() == pytest.approx(expected, rel=0.02)
    assert len(starfile.read(tmp_path / "truth" / "micrographs_ctf.star")) == 4


def test_acquisition_out_option_and_missing_folder(tmp_path, capsys):
    code, _, err = _cli(
        capsys,
        "acquisition",
        "--out",
        tmp_path / "s",
        "--movies",
        1,
        "--size",
        128,
        "--frames",
        2,
        "--seed",
        1,
    )
    assert code == 0, err
    assert len(list((tmp_path / "s").glob("*_fractions.tiff"))) == 1
    code, _, err = _cli(capsys, "acquisition", "--movies", 1)
    assert code != 0 and "RAW_DIR or --out" in err and "Traceback" not in err


# every option of `cryofac simulate acquisition` that shapes the session folder
# (--interval: test_movies_land_over_time_with_an_interval; --device/--threads do not)
OPTION_CHANGES = """
--movies 2
--frames 3
--size 160
--pixel-size 3.0
--dose-per-frame 2.0
--particles 3
--defocus-range 20000 30000
--start-index 4
--format mrcs
--naming plain
--seed 6
"""


def _folder(path) -> dict:
    """Every file below ``path``: name -> content (times of writing left out)."""
    files = {}
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        if f.suffix in (".mrc", ".mrcs"):
            with mrcfile.open(f) as handle:
                data = (handle.data.tobytes(), float(handle.voxel_size.x))
        else:
            lines = f.read_bytes().splitlines()
            data = [line for line in lines if not line.startswith(b"# Created by")]
        files[str(f.relative_to(path))] = data
    return files


def test_every_acquisition_option_changes_the_session(
    tmp_path, capsys, assert_every_option_changes
):
    base = ["--movies", 1, "--frames", 2, "--size", 128, "--pixel-size", 2.5, "--particles", 2]

    def session(name: str, *extra) -> dict:
        code, _, err = _cli(capsys, "acquisition", tmp_path / name, *base, "--seed", 5, *extra)
        assert code == 0, err
        return _folder(tmp_path / name)

    assert_every_option_changes(session, OPTION_CHANGES)
