"""`cryofac extract` end to end: coordinates + CTF STAR -> stacks, particles.star, particles.cs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import starfile
from click.testing import CliRunner

from cryofac.cli import cli
from pipeline.io.cs import read_cs
from pipeline.io.mrc import read_mrc, write_mrc
from pipeline.io.particles import read_particles_star
from pipeline.picking.coords import write_coordinates


def _ctf_star(path, names, defocus=(15000.0, 14000.0, 20.0)):
    u, v, a = defocus
    starfile.write(
        pd.DataFrame(
            {
                "rlnMicrographName": names,
                "rlnDefocusU": [u] * len(names),
                "rlnDefocusV": [v] * len(names),
                "rlnDefocusAngle": [a] * len(names),
                "rlnCtfMaxResolution": [4.5] * len(names),
                "rlnCtfFigureOfMerit": [0.2] * len(names),
            }
        ),
        path,
    )
    return path


def _extract(star, coords_dir, out, *extra):
    """``cryofac extract --micrographs STAR --coords DIR --out OUT EXTRA...``."""
    args = ["extract", "--micrographs", str(star), "--coords", str(coords_dir), "--out", str(out)]
    return CliRunner().invoke(cli, [*args, *(str(e) for e in extra)])


def _micrographs_with_picks(tmp_path, n=2):
    """``n`` 300×400 noise micrographs (1.25 Å/px), each with two dark squares picked and a
    third pick off the edge; returns the CTF STAR (no optics table) and the picks' folder."""
    rng = np.random.default_rng(0)
    mics, coords_dir = [], tmp_path / "coords"
    for k in range(n):
        image = rng.normal(size=(300, 400)).astype(np.float32)
        xy = np.array([[100.0, 100.0], [250.0, 150.0], [395.0, 20.0]])  # last one off the edge
        for x, y in xy[:2]:
            image[int(y) - 3 : int(y) + 4, int(x) - 3 : int(x) + 4] -= 5.0
        path = write_mrc(tmp_path / f"mic_{k}.mrc", image, 1.25)
        write_coordinates(coords_dir / f"mic_{k}_autopick.star", xy, [3.0, 2.0, 1.0])
        mics.append(str(path))
    return _ctf_star(tmp_path / "micrographs_ctf.star", mics), coords_dir


def test_extract_cli_writes_stacks_star_and_cs(tmp_path):
    star, coords_dir = _micrographs_with_picks(tmp_path)
    out = tmp_path / "extract"
    result = _extract(star, coords_dir, out, "--box", 64, "--bin", 2, "--diameter", 20)
    assert result.exit_code == 0, result.output
    table = read_particles_star(out / "particles.star")
    assert len(table) == 4  # two per micrograph; the edge pick is skipped
    assert table.optics["rlnImageSize"].iloc[0] == 32
    assert table.optics["rlnImagePixelSize"].iloc[0] == 2.5
    p = table.particles
    assert (p["rlnDefocusU"] == 15000.0).all() and (p["rlnDefocusAngle"] == 20.0).all()
    idx, stacks = table.image_locations()
    stack, voxel = read_mrc(out / stacks[1])
    assert stack.shape == (2, 32, 32) and voxel == 2.5
    img = stack[idx[1]]
    assert img[15:18, 15:18].mean() > 2.0  # inverted: the dark square is white, centred
    cs = read_cs(out / "particles.cs")
    np.testing.assert_allclose(cs.particles["rlnCoordinateX"], p["rlnCoordinateX"], atol=0.05)
    assert list(cs.particles["rlnImageName"]) == list(p["rlnImageName"])


def test_extract_cli_reports_missing_coordinates_and_keeps_others(tmp_path):
    image = np.zeros((128, 128), np.float32)
    good = write_mrc(tmp_path / "good.mrc", image, 1.0)
    write_coordinates(tmp_path / "good_autopick.star", np.array([[64.0, 64.0]]), [1.0])
    star = _ctf_star(tmp_path / "ctf.star", [str(good), str(tmp_path / "lost.mrc")])
    result = _extract(star, tmp_path, tmp_path / "out", "--box", 32)
    assert result.exit_code != 0
    assert "lost" in result.output and "Traceback" not in result.output
    assert len(read_particles_star(tmp_path / "out" / "particles.star")) == 1
    odd = _extract(star, tmp_path, tmp_path / "o2", "--box", 33)
    assert odd.exit_code != 0 and "even" in odd.output


# every option of `cryofac extract` that shapes its output (--device/--threads do not)
OPTION_CHANGES = """
--box 48
--bin 2
--pixel-size 1.0
--diameter 20
--voltage 200  # the CTF STAR has no optics table
--cs 0.01
--amplitude-contrast 0.1
--no-invert
"""


def test_every_option_changes_the_particles(tmp_path, assert_every_option_changes):
    star, coords_dir = _micrographs_with_picks(tmp_path, n=1)

    def particles(name: str, *extra: str) -> tuple:
        out = tmp_path / name
        result = _extract(star, coords_dir, out, "--box", 64, *extra)
        assert result.exit_code == 0, result.output
        stack, _ = read_mrc(out / "Particles" / "mic_0.mrcs")
        lines = (out / "particles.star").read_text().splitlines()
        return stack.tobytes(), [line for line in lines if not line.startswith("# Created")]

    assert_every_option_changes(particles, OPTION_CHANGES)
