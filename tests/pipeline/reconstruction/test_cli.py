import json

import mrcfile
import numpy as np
import pandas as pd
import pytest
import starfile

from cryofac.cli import main
from pipeline.simulate import particles as simulate
from pipeline.simulate import volume as volume_mod


@pytest.fixture(scope="module")
def small_stack(tmp_path_factory):
    """120 apoferritin particles, box 32 at 6 Å/pixel (fast, not a resolution test)."""
    d = tmp_path_factory.mktemp("stack")
    vol = volume_mod.reference_volume(32, 6.0, cache=d / "cache")
    images, truth = simulate.simulate_particle_stack(vol, 120, 6.0, snr=0.5, rng=3)
    star = simulate.write_particle_stack(d, images, truth)
    return star


FAST = [
    "--classes", "2", "--class-iterations", "2", "--abinitio-iterations", "3",
    "--refine-iterations", "2", "--threads", "1",
]  # fmt: skip


@pytest.mark.slow
def test_reconstruct_writes_contract_outputs_and_resumes(small_stack, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["reconstruct", str(small_stack), "--out", str(out), *FAST]) == 0
    for name in [
        "map.mrc", "half1.mrc", "half2.mrc", "mask.mrc", "fsc.star", "particles.star",
        "particles.cs", "fsc.png", "slices.png", "result.json",
    ]:  # fmt: skip
        assert (out / name).stat().st_size > 0, name
    with mrcfile.open(out / "map.mrc") as m:
        assert m.data.shape == (32, 32, 32)
        assert float(m.voxel_size.x) == pytest.approx(6.0)
    fsc = starfile.read(out / "fsc.star")
    assert {"rlnResolution", "rlnAngstromResolution", "rlnFourierShellCorrelation"} <= set(
        fsc.columns
    )
    posed = starfile.read(out / "particles.star")["particles"]
    for col in ["rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi", "rlnOriginXAngst", "rlnOriginYAngst"]:
        assert col in posed.columns
    assert posed["rlnAngleTilt"].between(0, 180).all()
    # image paths still resolve from the output folder
    stack = posed["rlnImageName"].iloc[0].split("@")[1]
    assert (out / stack).exists()
    result = json.loads((out / "result.json").read_text())
    assert result["n_particles"] == len(posed)
    assert 12.0 <= result["resolution_A"] <= 200.0
    assert set(result["timings"]) >= {"class2d_s", "abinitio_s", "refine_s", "total_s"}
    cpu = result["cpu_seconds"]  # per stage, every thread: comparable under load
    assert set(cpu) == {"load_s", "class2d_s", "abinitio_s", "refine_s", "postprocess_s", "total_s"}
    assert cpu["abinitio_s"] > 0 and cpu["refine_s"] > 0
    assert cpu["total_s"] == pytest.approx(
        sum(v for k, v in cpu.items() if k != "total_s"), abs=0.1
    )
    # rerun: every stage is reused
    capsys.readouterr()
    mtime = (out / "half1.mrc").stat().st_mtime_ns
    assert main(["reconstruct", str(small_stack), "--out", str(out), *FAST]) == 0
    assert (out / "half1.mrc").stat().st_mtime_ns == mtime
    again = json.loads((out / "result.json").read_text())
    assert again["resolution_A"] == pytest.approx(result["resolution_A"])
    assert "reused" in capsys.readouterr().out  # progress lines in the log (no terminal)
    progress = json.loads((out / "progress.json").read_text())
    assert progress["stage"] == "done" and progress["fraction"] == 1.0
    # another refinement option: 2D and ab-initio are reused, refinement is not
    stamps = {name: (out / name).stat().st_mtime_ns for name in ("class2d.npz", "abinitio.mrc")}
    changed = [*FAST[:-4], "--refine-iterations", "1", "--threads", "1"]
    changed += ["--refine-top-k", "2", "--keep-last"]
    changed += ["--recheck-every", "2", "--recheck-resolution", "10"]
    assert main(["reconstruct", str(small_stack), "--out", str(out), *changed]) == 0
    assert {name: (out / name).stat().st_mtime_ns for name in stamps} == stamps
    assert (out / "half1.mrc").stat().st_mtime_ns != mtime
    third = json.loads((out / "result.json").read_text())
    assert third["options"]["refine"]["max_iterations"] == 1
    assert third["options"]["refine"]["top_k"] == 2 and not third["options"]["refine"]["keep_best"]
    assert third["options"]["refine"]["recheck_every"] == 2
    assert third["options"]["refine"]["recheck_resolution_A"] == 10.0
    assert len([h for h in third["refine_history"] if isinstance(h["iteration"], int)]) == 1
    # another ab-initio option: ab-initio runs again, with it
    explore = [*changed, "--abinitio-starts", "3", "--abinitio-explore", "1"]
    explore += ["--abinitio-rounds", "2", "--abinitio-posterior", "top"]
    assert main(["reconstruct", str(small_stack), "--out", str(out), *explore]) == 0
    assert (out / "abinitio.mrc").stat().st_mtime_ns != stamps["abinitio.mrc"]
    result = json.loads((out / "result.json").read_text())
    fourth = result["options"]["abinitio"]
    assert fourth["n_starts"] == 3 and fourth["explore_fraction"] == 1.0
    assert fourth["rounds"] == 2 and fourth["posterior"] == "top"
    # each half's judging rounds (none here: 60 particles a half are too few for starts)
    assert result["abinitio"]["starts_judged"] == [[], []]


@pytest.mark.slow
def test_keep_classes_overrides_the_selection_and_reuses_the_classification(
    small_stack, tmp_path, capsys
):
    """``--keep-classes`` replaces the automatic 2D selection: the run keeps exactly the
    particles of the chosen class, the classification is reused, and a class number that
    does not exist is one plain error."""
    out = tmp_path / "run"
    three = ["--classes", "3", *FAST[2:]]
    assert main(["reconstruct", str(small_stack), "--out", str(out), *three]) == 0
    auto = json.loads((out / "result.json").read_text())
    counts = auto["class_counts"]
    assert auto["options"]["keep_classes"] is None
    chosen = int(np.argmax(counts)) + 1
    stamp = (out / "class2d.npz").stat().st_mtime_ns
    args = ["reconstruct", str(small_stack), "--out", str(out), *three]
    assert main([*args, "--keep-classes", str(chosen)]) == 0
    manual = json.loads((out / "result.json").read_text())
    assert (out / "class2d.npz").stat().st_mtime_ns == stamp  # classification reused
    assert manual["classes_kept"] == [chosen]
    assert manual["n_particles"] == counts[chosen - 1]
    assert manual["options"]["keep_classes"] == [chosen]
    if sorted(auto["classes_kept"]) != [chosen]:
        assert manual["n_particles"] != auto["n_particles"]
    capsys.readouterr()
    assert main([*args, "--keep-classes", "2,9"]) != 0
    assert "9 is not among the 2D classes 1–3" in _error(capsys)
    assert main([*args, "--keep-classes", "one"]) != 0
    assert "--keep-classes" in capsys.readouterr().err


def _error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("Error:"), err
    return err[0]


def test_missing_stack_is_one_clear_error(small_stack, tmp_path, capsys):
    data = starfile.read(small_stack)
    data["particles"]["rlnImageName"] = "1@missing_stack.mrcs"
    bad = tmp_path / "bad.star"
    starfile.write(data, bad)
    assert main(["reconstruct", str(bad), "--out", str(tmp_path / "o")]) != 0
    assert "missing_stack.mrcs not found" in _error(capsys)


def test_inconsistent_pixel_sizes_is_one_clear_error(small_stack, tmp_path, capsys):
    data = starfile.read(small_stack)
    optics = data["optics"]
    second = optics.copy()
    second["rlnOpticsGroup"] = 2
    second["rlnImagePixelSize"] = 4.0
    data["optics"] = pd.concat([optics, second], ignore_index=True)
    data["particles"].loc[data["particles"].index[::2], "rlnOpticsGroup"] = 2
    bad = small_stack.parent / "mixed.star"
    starfile.write(data, bad)
    assert main(["reconstruct", str(bad), "--out", str(tmp_path / "o")]) != 0
    assert "inconsistent pixel sizes" in _error(capsys)


def test_fewer_particles_than_classes_is_one_clear_error(small_stack, tmp_path, capsys):
    assert (
        main(["reconstruct", str(small_stack), "--out", str(tmp_path / "o"), "--classes", "500"])
        != 0
    )
    assert "fewer than the 500 2D classes" in _error(capsys)


def test_unknown_symmetry_and_missing_gpu(small_stack, tmp_path, capsys):
    assert (
        main(["reconstruct", str(small_stack), "--out", str(tmp_path / "o"), "--symmetry", "X7"])
        != 0
    )
    assert "not supported" in _error(capsys)
    from pipeline import backend

    if not backend.gpu_available()[0]:
        assert (
            main(["reconstruct", str(small_stack), "--out", str(tmp_path / "o"), "--device", "gpu"])
            != 0
        )
        assert "gpu" in _error(capsys).lower()


@pytest.mark.slow
def test_reconstruct_accepts_particles_without_coordinates(small_stack, tmp_path):
    """Issue 21: a RELION 3.1 particles STAR with CTF columns but no rlnCoordinateX/Y or
    rlnMicrographName (other programs, simulations) is reconstructed; outputs keep none."""
    data = starfile.read(small_stack)
    parts = data["particles"].drop(
        columns=["rlnCoordinateX", "rlnCoordinateY", "rlnMicrographName"], errors="ignore"
    )
    parts["rlnImageName"] = [
        f"{index}@{(small_stack.parent / stack).resolve()}"
        for index, stack in (name.split("@") for name in parts["rlnImageName"])
    ]
    bare = tmp_path / "bare.star"
    starfile.write({"optics": data["optics"], "particles": parts}, bare)
    assert "rlnCoordinateX" not in bare.read_text()
    out = tmp_path / "run"
    assert main(["reconstruct", str(bare), "--out", str(out), *FAST]) == 0
    posed = starfile.read(out / "particles.star")["particles"]
    assert len(posed) == len(parts) and "rlnAngleRot" in posed.columns
    assert (out / "map.mrc").stat().st_size > 0 and (out / "particles.cs").stat().st_size > 0
