"""cryoSPARC .cs files: round trip with RELION tables, poses, location fields."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.geometry import euler_to_matrix, random_rotations
from pipeline.io.cs import CSError, read_cs, write_cs
from pipeline.io.mrc import write_mrc
from pipeline.io.particles import ParticleTable, make_optics
from tests.pipeline.io.particle_tables import random_particles

MICROGRAPHS = ["m0.mrc", "m1.mrc", "m2.mrc"]


def _table(n: int, posed: bool, seed: int = 1) -> ParticleTable:
    rng = np.random.default_rng(seed)
    parts = random_particles(
        n, rng, micrographs=MICROGRAPHS, size_px=(600, 400), max_astigmatism_A=800, max_angle_deg=89
    )
    if posed:
        from pipeline.geometry import matrix_to_euler

        rot, tilt, psi = matrix_to_euler(random_rotations(n, rng))
        parts["rlnAngleRot"], parts["rlnAngleTilt"], parts["rlnAnglePsi"] = rot, tilt, psi
        parts["rlnOriginXAngst"] = rng.uniform(-5, 5, n)
        parts["rlnOriginYAngst"] = rng.uniform(-5, 5, n)
        parts["rlnRandomSubset"] = rng.integers(1, 3, n)
    return ParticleTable(make_optics(1.3, 128, 300.0, 2.7, 0.1, 1.3), parts)


SHAPES = {name: (400, 600) for name in MICROGRAPHS}


def test_unposed_round_trip(tmp_path):
    table = _table(20, posed=False)
    path = write_cs(tmp_path / "particles.cs", table, micrograph_shapes=SHAPES)
    from cryosparc.dataset import Dataset

    ds = Dataset.load(str(path))
    for field in (
        "blob/path",
        "blob/idx",
        "blob/shape",
        "blob/psize_A",
        "ctf/df1_A",
        "ctf/df_angle_rad",
        "location/center_x_frac",
        "location/micrograph_shape",
    ):
        assert field in ds.fields()
    assert not any(f.startswith("alignments3D") for f in ds.fields())
    assert ds["blob/idx"].tolist() == list(range(20))
    assert float(ds["ctf/amp_contrast"][0]) == pytest.approx(0.1)
    back = read_cs(path)
    for c in ("rlnCoordinateX", "rlnCoordinateY", "rlnDefocusU", "rlnDefocusV", "rlnDefocusAngle"):
        np.testing.assert_allclose(back.particles[c], table.particles[c], rtol=1e-5, atol=2e-3)
    assert list(back.particles["rlnImageName"]) == list(table.particles["rlnImageName"])
    assert back.optics["rlnImageSize"].iloc[0] == 128
    assert not back.has_poses


def test_posed_round_trip_recovers_rotation_matrices(tmp_path):
    table = _table(50, posed=True)
    path = write_cs(tmp_path / "p.cs", table, micrograph_shapes=SHAPES)
    back = read_cs(path)
    assert back.has_poses
    p, q = table.particles, back.particles
    a = euler_to_matrix(p["rlnAngleRot"], p["rlnAngleTilt"], p["rlnAnglePsi"])
    b = euler_to_matrix(q["rlnAngleRot"], q["rlnAngleTilt"], q["rlnAnglePsi"])
    assert np.abs(a - b).max() < 1e-5
    np.testing.assert_allclose(q["rlnOriginXAngst"], p["rlnOriginXAngst"], atol=1e-4)
    np.testing.assert_allclose(q["rlnOriginYAngst"], p["rlnOriginYAngst"], atol=1e-4)
    assert list(q["rlnRandomSubset"]) == list(p["rlnRandomSubset"])


def test_pose_is_axis_angle_of_transposed_relion_matrix(tmp_path):
    """RELION rot=30° gives A = [[cos, sin], [−sin, cos]]; its transpose is +30° about z."""
    table = _table(1, posed=True)
    table.particles.loc[0, ["rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi"]] = [30.0, 0.0, 0.0]
    table.particles.loc[0, ["rlnOriginXAngst", "rlnOriginYAngst"]] = [2.6, -1.3]
    from cryosparc.dataset import Dataset

    ds = Dataset.load(str(write_cs(tmp_path / "one.cs", table, micrograph_shapes=SHAPES)))
    np.testing.assert_allclose(ds["alignments3D/pose"][0], [0, 0, np.deg2rad(30)], atol=1e-6)
    np.testing.assert_allclose(ds["alignments3D/shift"][0], [2.0, -1.0], atol=1e-6)


def test_micrograph_shape_from_mrc_headers(tmp_path):
    table = _table(6, posed=False)
    for i in range(3):
        write_mrc(tmp_path / f"m{i}.mrc", np.zeros((400, 600), np.float32), 1.3)
    from cryosparc.dataset import Dataset

    ds = Dataset.load(str(write_cs(tmp_path / "p.cs", table, base_dir=tmp_path)))
    assert ds["location/micrograph_shape"][0].tolist() == [400, 600]


def test_unreadable_cs(tmp_path):
    bad = tmp_path / "bad.cs"
    bad.write_bytes(b"not numpy")
    with pytest.raises(CSError, match="bad.cs"):
        read_cs(bad)
    with pytest.raises(CSError, match="not found"):
        read_cs(tmp_path / "none.cs")


def test_refined_particles_keep_location_when_micrographs_resolve_from_the_run_folder(
    tmp_path, monkeypatch
):
    """reconstruct/pN/particles.cs: micrograph names are relative to the run folder (the
    working folder of the job), not to the .cs file's folder: location/* is kept."""
    table = _table(6, posed=True)
    for i in range(3):
        write_mrc(tmp_path / f"m{i}.mrc", np.zeros((400, 600), np.float32), 1.3)
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "reconstruct" / "p0000006"
    from cryosparc.dataset import Dataset

    ds = Dataset.load(str(write_cs(out / "particles.cs", table, base_dir=out)))
    assert ds["location/micrograph_shape"][0].tolist() == [400, 600]
    assert (tmp_path / str(ds["location/micrograph_path"][0])).exists()
