"""RELION 3.1 particles STAR: round trip, validation errors."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.io.particles import (
    ParticleStarError,
    ParticleTable,
    make_optics,
    read_particles_star,
    write_particles_star,
)
from tests.pipeline.io.particle_tables import random_particles


def _table(n: int = 7, rng_seed: int = 0) -> ParticleTable:
    rng = np.random.default_rng(rng_seed)
    mics = ["mic_0.mrc", "mic_1.mrc"]
    parts = random_particles(
        n, rng, micrographs=mics, size_px=(4096, 4096), max_astigmatism_A=500, max_angle_deg=90
    )
    parts["rlnAutopickFigureOfMerit"] = rng.normal(size=n)
    return ParticleTable(make_optics(1.06, 256, micrograph_pixel_size_A=1.06), parts)


def test_round_trip_keeps_every_value(tmp_path):
    table = _table()
    path = write_particles_star(tmp_path / "particles.star", table)
    back = read_particles_star(path)
    assert list(back.optics["rlnImageSize"]) == [256]
    assert back.optics["rlnImagePixelSize"].iloc[0] == pytest.approx(1.06)
    assert list(back.particles["rlnImageName"]) == list(table.particles["rlnImageName"])
    for column in ("rlnCoordinateX", "rlnDefocusU", "rlnDefocusV", "rlnDefocusAngle"):
        np.testing.assert_allclose(back.particles[column], table.particles[column], atol=1e-5)
    idx, stacks = back.image_locations()
    assert idx.tolist() == list(range(7))
    assert stacks[1] == "Extract/mic_1.mrcs"
    text = path.read_text()
    assert "data_optics" in text and "data_particles" in text
    assert text.count("# version 30001") == 2


def test_missing_column_is_named(tmp_path):
    table = _table()
    table.particles = table.particles.drop(columns=["rlnDefocusV"])
    with pytest.raises(ParticleStarError, match="rlnDefocusV"):
        write_particles_star(tmp_path / "p.star", table)


def test_unknown_optics_group_rejected(tmp_path):
    table = _table()
    table.particles.loc[0, "rlnOpticsGroup"] = 3
    with pytest.raises(ParticleStarError, match="optics group"):
        write_particles_star(tmp_path / "p.star", table)


def test_relion30_file_without_optics_is_explained(tmp_path):
    path = tmp_path / "old.star"
    path.write_text("data_\n\nloop_\n_rlnImageName #1\n_rlnDefocusU #2\n000001@a.mrcs 10000.0\n")
    with pytest.raises(ParticleStarError, match="data_optics"):
        read_particles_star(path)


def test_missing_file(tmp_path):
    with pytest.raises(ParticleStarError, match="not found"):
        read_particles_star(tmp_path / "nope.star")


def test_bad_image_name():
    table = _table(2)
    table.particles.loc[1, "rlnImageName"] = "stack.mrcs"
    with pytest.raises(ParticleStarError, match="N@stack"):
        table.image_locations()


def test_particles_without_coordinates_are_read_and_converted(tmp_path):
    """Issue 21: a RELION 3.1 particles STAR with CTF columns but no micrograph name or
    coordinates (simulations, other programs) is accepted by every reader."""
    from pipeline.io.cs import table_to_dataset
    from pipeline.io.mrc import write_mrc
    from pipeline.reconstruction.particles import load_particles

    table = _table()
    table.particles = table.particles.drop(
        columns=["rlnMicrographName", "rlnCoordinateX", "rlnCoordinateY"]
    )
    table.particles["rlnImageName"] = [f"{i + 1}@stack.mrcs" for i in range(7)]
    table.optics["rlnImageSize"] = 16
    write_mrc(tmp_path / "stack.mrcs", np.ones((7, 16, 16), np.float32), 1.06)
    path = write_particles_star(tmp_path / "particles.star", table)
    back = read_particles_star(path)
    assert not back.has_locations and len(back) == 7
    dataset = table_to_dataset(back)
    assert "location/center_x_frac" not in dataset.fields()
    assert np.allclose(dataset["ctf/df2_A"], table.particles["rlnDefocusV"], atol=0.01)
    assert load_particles(path).images.shape == (7, 16, 16)
    # still refused without the CTF
    table.particles = table.particles.drop(columns=["rlnDefocusU"])
    with pytest.raises(ParticleStarError, match="rlnDefocusU"):
        write_particles_star(tmp_path / "p2.star", table)
