"""A reconstruction stage is reused only for the same particles, options and code."""

import json

import mrcfile
import numpy as np
import pytest

from cryofac.cli import main
from pipeline.reconstruction import stage_cache
from pipeline.simulate import particles as simulate
from pipeline.simulate import volume as volume_mod

FAST = [
    "--classes", "2", "--class-iterations", "2", "--abinitio-iterations", "3",
    "--refine-iterations", "2", "--threads", "1",
]  # fmt: skip


def test_changed_option_removes_that_stage_and_every_later_one(tmp_path):
    star = tmp_path / "p.star"
    star.write_text("data_particles\n")
    options = {"class2d": {"n": 2}, "abinitio": {"symmetry": "C1"}, "refine": {"symmetry": "C1"}}
    keys = stage_cache.stage_keys(stage_cache.particles_digest(star), options)
    for files in stage_cache.STAGE_FILES.values():
        for name in files:
            (tmp_path / name).write_text("x")
    # a folder without a record (made by an older version) is not trusted
    assert stage_cache.prepare(tmp_path, keys) == ["class2d", "abinitio", "refine"]
    for files in stage_cache.STAGE_FILES.values():
        for name in files:
            (tmp_path / name).write_text("x")
    assert stage_cache.prepare(tmp_path, keys) == []  # same key: all kept
    changed = {**options, "abinitio": {"symmetry": "O"}, "refine": {"symmetry": "O"}}
    new_keys = stage_cache.stage_keys(stage_cache.particles_digest(star), changed)
    assert new_keys["class2d"] == keys["class2d"] and new_keys["abinitio"] != keys["abinitio"]
    assert stage_cache.prepare(tmp_path, new_keys) == ["abinitio", "refine"]
    assert (tmp_path / "class2d.npz").exists() and not (tmp_path / "half1.mrc").exists()
    # other particles: nothing kept
    star.write_text("# written at another time: comments do not count\ndata_particles\n")
    same = stage_cache.stage_keys(stage_cache.particles_digest(star), changed)
    assert same == new_keys
    star.write_text("data_particles\n\nloop_\n_rlnImageName #1\n1@a.mrcs\n")
    other = stage_cache.stage_keys(stage_cache.particles_digest(star), changed)
    assert stage_cache.prepare(tmp_path, other) == ["class2d"]


@pytest.mark.slow
def test_symmetry_change_gives_new_half_maps_and_result_says_what_ran(tmp_path):
    volume = volume_mod.reference_volume(32, 6.0, cache=tmp_path / "cache")
    images, truth = simulate.simulate_particle_stack(volume, 120, 6.0, snr=0.5, rng=3)
    star = simulate.write_particle_stack(tmp_path / "stack", images, truth)
    out = tmp_path / "run"
    assert main(["reconstruct", str(star), "--out", str(out), *FAST]) == 0
    c1 = mrcfile.read(out / "half1.mrc").copy()
    first = json.loads((out / "result.json").read_text())
    assert first["options"]["refine"]["symmetry"] == "C1"
    assert main(["reconstruct", str(star), "--out", str(out), *FAST, "--symmetry", "C2"]) == 0
    o_map = mrcfile.read(out / "half1.mrc")
    assert not np.array_equal(
        c1, o_map
    )  # recomputed, not the C1 half-map reused (C1 -> O is the same path, slower)
    result = json.loads((out / "result.json").read_text())
    assert result["symmetry"] == "C2" and result["options"]["abinitio"]["symmetry"] == "C2"
    assert result["stage_keys"]["class2d"] == first["stage_keys"]["class2d"]  # 2D reused
    assert result["stage_keys"]["refine"] != first["stage_keys"]["refine"]
