import mrcfile
import numpy as np
import pytest
from click.testing import CliRunner

from pipeline.cli.motioncorr import motioncorr, parse_patches
from pipeline.io.mrc import write_mrc
from pipeline.io.star import read_table

from .synth import read_drift, rigid_movie


def test_parse_patches():
    assert parse_patches("5x5") == (5, 5)
    assert parse_patches("3X4") == (3, 4)
    assert parse_patches("1x1") is None
    with pytest.raises(Exception, match="COLUMNSxROWS"):
        parse_patches("five")


@pytest.fixture(scope="module")
def movies(tmp_path_factory):
    d = tmp_path_factory.mktemp("movies")
    frames, drift, _ = rigid_movie(n_frames=8, drift_total_A=8.0, seed=11)
    gain = np.random.default_rng(2).uniform(0.8, 1.2, (256, 256)).astype(np.float32)
    raw = (frames / gain).astype(np.float32)  # the detector's raw counts
    write_mrc(d / "good.mrcs", raw, 1.0, stack=True)
    write_mrc(d / "gain.mrc", gain, 1.0)
    write_mrc(d / "small.mrcs", raw[:, :192, :192], 1.0, stack=True)
    write_mrc(d / "one.mrc", raw[0], 1.0)
    data = (d / "good.mrcs").read_bytes()
    (d / "cut.mrcs").write_bytes(data[: len(data) // 2])
    return d, drift


def test_motioncorr_outputs_and_bad_inputs(movies, tmp_path):
    d, drift = movies
    out = tmp_path / "out"
    args = [str(d / n) for n in ("good.mrcs", "cut.mrcs", "small.mrcs", "one.mrc")]
    result = CliRunner().invoke(
        motioncorr,
        [
            *args,
            "--out",
            str(out),
            "--pixel-size",
            "1.0",
            "--dose-per-frame",
            "5.0",
            "--gain",
            str(d / "gain.mrc"),
            "--patches",
            "1x1",
            "--plots",
        ],
    )
    assert result.exit_code == 1, result.output
    err = result.output
    assert "cut.mrcs: " in err and "truncated" in err
    assert "small.mrcs: " in err and "gain reference" in err
    assert "one.mrc: " in err and "1 frame" in err
    assert "3 of 4 inputs failed" in err
    assert "Traceback" not in err
    # the good movie was processed completely
    for name in ("good.mrc", "good_noDW.mrc", "good_shifts.star", "good_drift.png"):
        assert (out / name).exists(), name
    with mrcfile.open(out / "good.mrc") as m:
        assert m.data.shape == (256, 256) and m.data.dtype == np.float32
        assert m.voxel_size.x == pytest.approx(1.0)
    recovered = read_drift(out / "good_shifts.star")
    assert np.sqrt(np.mean(np.sum((recovered - (drift - drift[0])) ** 2, 1))) < 0.5
    shifts = read_table(out / "good_shifts.star", "global_shift")
    np.testing.assert_allclose(shifts["rlnMicrographShiftX"], -recovered[:, 0])
    table = read_table(
        out / "corrected_micrographs.star",
        "micrographs",
        ["rlnMicrographName", "rlnAccumMotionTotal", "rlnAccumMotionEarly", "rlnAccumMotionLate"],
    )
    assert len(table) == 1 and table["rlnMicrographName"].iloc[0].endswith("good.mrc")
    row = table.iloc[0]
    assert row["rlnAccumMotionTotal"] == pytest.approx(8.0, rel=0.25)
    assert row["rlnAccumMotionTotal"] == pytest.approx(
        row["rlnAccumMotionEarly"] + row["rlnAccumMotionLate"]
    )


def test_gpu_device_without_gpu_is_one_line_error(movies, tmp_path):
    from pipeline.backend import gpu_available

    if gpu_available()[0]:
        pytest.skip("a GPU is present")
    d, _ = movies
    result = CliRunner().invoke(
        motioncorr,
        [
            str(d / "good.mrcs"),
            "--out",
            str(tmp_path),
            "--pixel-size",
            "1",
            "--dose-per-frame",
            "1",
            "--device",
            "gpu",
        ],
    )
    assert result.exit_code != 0
    assert "--device gpu" in result.output and "Traceback" not in result.output


def test_motioncorr_on_simulated_tiff_with_gain_file(tmp_path):
    """Simulator movie (non-periodic field, integer counts, gain) through TIFF + gain MRC."""
    from pipeline.simulate import reference_volume
    from pipeline.simulate.movie import SpecimenMotion, simulate_movie, write_gain, write_movie

    raw, truth = simulate_movie(
        reference_volume(128, 1.0),
        (512, 512),
        1.0,
        n_frames=12,
        dose_per_frame_e_A2=2.0,
        motion=SpecimenMotion(drift_total_A=15.0, local_amplitude_A=2.0),
        rng=1,
        integer_counts=True,
    )
    write_movie(tmp_path / "sim.tiff", raw, 1.0)
    write_gain(tmp_path / "gain.mrc", truth.gain, 1.0)
    result = CliRunner().invoke(
        motioncorr,
        [
            str(tmp_path / "sim.tiff"),
            "--out",
            str(tmp_path / "out"),
            "--pixel-size",
            "1",
            "--dose-per-frame",
            "2",
            "--gain",
            str(tmp_path / "gain.mrc"),
            "--patches",
            "3x3",
            "--plots",
        ],
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out" / "sim_drift.png").stat().st_size > 1000  # with the local panel
    yy, xx = np.mgrid[0:512:16, 0:512:16]
    field_mean = np.array([truth.shift_px(f, xx, yy).reshape(-1, 2).mean(0) for f in range(12)])
    recovered = read_drift(tmp_path / "out" / "sim_shifts.star")
    err = recovered - (field_mean - field_mean[0])
    assert np.sqrt(np.mean(np.sum(err**2, 1))) < 0.5


def test_alignment_tolerance_and_iterations_change_the_shifts(movies, tmp_path):
    """--max-iterations and --tolerance reach the global alignment (pipeline.yaml keys)."""
    d, drift = movies

    def shifts(*extra: str) -> np.ndarray:
        out = tmp_path / "_".join(extra).replace("-", "") or "default"
        args = [str(d / "good.mrcs"), "--out", str(out), "--pixel-size", "1.0"]
        args += ["--dose-per-frame", "5.0", "--gain", str(d / "gain.mrc"), "--patches", "1x1"]
        result = CliRunner().invoke(motioncorr, [*args, *extra])
        assert result.exit_code == 0, result.output
        return read_drift(out / "good_shifts.star")

    converged = shifts()
    assert np.sqrt(np.mean((converged - (drift - drift[0])) ** 2)) < 0.3  # px, vs the truth
    one_round = shifts("--max-iterations", "1")
    loose = shifts("--tolerance", "100")  # stops after the first round
    assert not np.allclose(one_round, converged, atol=1e-3)
    assert np.allclose(loose, one_round, atol=1e-6)


def _motioncorr_outputs(out) -> dict:
    """Every file the step wrote (plots aside), as bytes of data and STAR text."""
    written = {}
    for path in sorted(out.iterdir()):
        if path.suffix == ".mrc":
            with mrcfile.open(path) as m:
                written[path.name] = (m.data.tobytes(), float(m.voxel_size.x))
        elif path.suffix == ".star":
            lines = path.read_text().replace(str(out), "OUT").splitlines()
            written[path.name] = [line for line in lines if not line.startswith("# Created")]
    return written


# every option of `cryofac motioncorr` that shapes the result (--device/--threads do not;
# --plots adds a picture: test_motioncorr_on_simulated_tiff_with_gain_file)
OPTION_CHANGES = """
--pixel-size 1.3
--dose-per-frame 2.0
--voltage 200
--gain {d}/gain.mrc
--defects {d}/defects.mrc
--patches 2x2
--pre-exposure 20
--bfactor 2000
--tolerance 100
--max-iterations 1
"""


def test_every_option_changes_the_output(movies, tmp_path, assert_every_option_changes):
    d, _ = movies
    defects = np.zeros((256, 256), np.float32)
    defects[40:44, :] = 1.0  # a dead row band
    write_mrc(d / "defects.mrc", defects, 1.0)

    def run(name: str, *extra: str) -> dict:
        out = tmp_path / name
        args = [str(d / "good.mrcs"), "--out", str(out), "--pixel-size", "1.0"]
        args += ["--dose-per-frame", "5.0", "--patches", "1x1"]
        result = CliRunner().invoke(motioncorr, [*args, *(e.format(d=d) for e in extra)])
        assert result.exit_code == 0, result.output
        return _motioncorr_outputs(out)

    assert_every_option_changes(run, OPTION_CHANGES)
