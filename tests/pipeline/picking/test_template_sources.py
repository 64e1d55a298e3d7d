"""Issue 21: templates from a 3D map (views over the sphere) and from 2D class averages,
and a test per `cryofac pick` option that changing it changes what the command does."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

from cryofac.cli import cli
from pipeline.ctf_model import CTFParams
from pipeline.geometry import fibonacci_sphere_views
from pipeline.io.mrc import write_mrc
from pipeline.picking.coords import read_coordinates
from pipeline.picking.evaluate import match_picks
from pipeline.picking.template import pick_templates, templates_from_map
from pipeline.picking.template_source import TemplateError, load_templates
from pipeline.simulate.micrograph import simulate_micrograph

PIXEL_A = 4.0


def asymmetric_map(box: int = 48) -> np.ndarray:
    """An L-shaped, chiral cluster of Gaussian blobs of unequal sizes (potential in V)."""
    z, y, x = np.mgrid[:box, :box, :box].astype(np.float32) - box // 2
    centres = [(0, 0, -12, 4.0, 6.0), (0, 0, 0, 5.0, 8.0), (0, 0, 11, 4.0, 6.0), (0, 10, 11, 3.0, 5.0), (7, 0, 0, 3.0, 4.0)]  # fmt: skip
    volume = np.zeros((box, box, box), np.float32)
    for cz, cy, cx, sigma, height in centres:
        volume += height * np.exp(-((x - cx) ** 2 + (y - cy) ** 2 + (z - cz) ** 2) / (2 * sigma**2))
    return volume


@pytest.fixture(scope="module")
def field():
    volume = asymmetric_map()
    ctf = CTFParams(20300.0, 19700.0, 20.0)
    image, truth = simulate_micrograph(
        volume, (768, 768), PIXEL_A, n_particles=40, ctf=ctf, n_contaminants=0, rng=5
    )
    return volume, image, truth


def test_views_cover_the_sphere():
    rot, tilt = fibonacci_sphere_views(50)
    z = np.cos(np.radians(tilt))
    assert z.min() < -0.95 and z.max() > 0.95 and abs(z.mean()) < 0.02
    assert len(set(np.round(rot, 3))) == 50


def test_more_views_of_an_asymmetric_map_find_more_particles(field):
    volume, image, truth = field
    diameter = 110.0
    scores = {}
    for views in (1, 50):
        templates = templates_from_map(volume, PIXEL_A, views)
        assert templates.shape[0] == views
        picks = pick_templates(image, PIXEL_A, diameter, templates, PIXEL_A, ctf=truth.ctf)
        scores[views] = (
            match_picks(picks.coords_px, truth.coords_px, 0.3 * diameter / PIXEL_A),
            picks,
        )
    assert scores[50][0].recall >= 0.9, scores[50][0]
    assert scores[50][0].f1 > scores[1][0].f1, (scores[1][0], scores[50][0])
    # the 50-view bank matches the particles better (higher NCC at the same threshold rule)
    assert np.median(scores[50][1].fom) > np.median(scores[1][1].fom)
    assert scores[50][1].template_index.max() > 0


def _write_ctf(tmp_path, ctf: CTFParams) -> None:
    import pandas as pd
    import starfile

    starfile.write(
        pd.DataFrame(
            {
                "rlnMicrographName": ["mic.mrc"],
                "rlnDefocusU": [ctf.defocus_u_A],
                "rlnDefocusV": [ctf.defocus_v_A],
                "rlnDefocusAngle": [ctf.defocus_angle_deg],
            }
        ),
        tmp_path / "ctf.star",
    )


def _pick(tmp_path, name, *args):
    ctf = ["--ctf", str(tmp_path / "ctf.star")] if (tmp_path / "ctf.star").exists() else []
    result = CliRunner().invoke(
        cli, ["pick", str(tmp_path / "mic.mrc"), "--out", str(tmp_path / name), *ctf, *args]
    )
    assert result.exit_code == 0, result.output
    return read_coordinates(tmp_path / name / "mic_autopick.star"), result.output


@pytest.mark.slow
def test_cli_template_options_change_the_picks(field, tmp_path):
    volume, image, truth = field
    write_mrc(tmp_path / "mic.mrc", image, PIXEL_A)
    write_mrc(tmp_path / "map.mrc", volume, PIXEL_A)
    _write_ctf(tmp_path, truth.ctf)
    base = ["--diameter", "110", "--method", "template", "--templates", str(tmp_path / "map.mrc")]
    (c1, f1), out1 = _pick(tmp_path, "v1", *base, "--template-views", "1")
    (c50, f50), out50 = _pick(tmp_path, "v50", *base, "--template-views", "50")
    assert "1 from" in out1 and "50 from" in out50 and "(map)" in out50
    tol = 0.3 * 110 / PIXEL_A
    assert match_picks(c50, truth.coords_px, tol).f1 > match_picks(c1, truth.coords_px, tol).f1
    # a coarse in-plane search of an asymmetric template changes the scores
    (c90, f90), _ = _pick(tmp_path, "a90", *base, "--template-views", "50", "--angle-step", "90")
    assert np.median(f90) < np.median(f50)
    # an absolute threshold keeps fewer picks than the noise-based default
    (ct, ft), _ = _pick(tmp_path, "t", *base, "--template-views", "50", "--threshold", "8")
    assert len(ct) < len(c50)
    # 2D class averages: a .mrcs stack is used image by image, not as a map
    stack = templates_from_map(volume, PIXEL_A, 12)
    write_mrc(tmp_path / "classes.mrcs", stack, PIXEL_A, stack=True)
    (cc, fc), outc = _pick(
        tmp_path, "cls", "--diameter", "110", "--method", "template",
        "--templates", str(tmp_path / "classes.mrcs"),
    )  # fmt: skip
    assert "12 from" in outc and "(classes)" in outc
    assert match_picks(cc, truth.coords_px, tol).recall >= 0.85


def test_cli_blob_range_changes_the_picks(field, tmp_path):
    _, image, truth = field
    write_mrc(tmp_path / "mic.mrc", image, PIXEL_A)
    _write_ctf(tmp_path, truth.ctf)
    (a, fa), _ = _pick(tmp_path, "a", "--diameter", "110")
    (b, fb), _ = _pick(tmp_path, "b", "--diameter", "110", "--min-diameter", "50", "--max-diameter", "150")  # fmt: skip
    assert len(a) != len(b) or not np.allclose(fa, fb)


def test_template_files_are_checked(tmp_path):
    write_mrc(tmp_path / "blank.mrcs", np.zeros((3, 32, 32), np.float32), 2.0, stack=True)
    with pytest.raises(TemplateError, match="blank"):
        load_templates(tmp_path / "blank.mrcs")
    write_mrc(tmp_path / "rect.mrcs", np.ones((3, 32, 30), np.float32), 2.0, stack=True)
    with pytest.raises(TemplateError, match="square"):
        load_templates(tmp_path / "rect.mrcs")
    mic = write_mrc(tmp_path / "mic.mrc", np.zeros((256, 256), np.float32), 2.0)
    result = CliRunner().invoke(
        cli,
        ["pick", str(mic), "--out", str(tmp_path / "o"), "--diameter", "50", "--method",
         "template", "--templates", str(tmp_path / "blank.mrcs")],
    )  # fmt: skip
    assert result.exit_code != 0 and "blank" in result.output and "Traceback" not in result.output
    result = CliRunner().invoke(
        cli,
        ["pick", str(mic), "--out", str(tmp_path / "o"), "--diameter", "50",
         "--templates", str(tmp_path / "blank.mrcs")],
    )  # fmt: skip
    assert result.exit_code != 0 and "--method template" in result.output
    # a cubic volume is a map, a stack of the same shape marked as images is not
    vol = asymmetric_map(32)
    write_mrc(tmp_path / "map.mrc", vol, 4.0)
    write_mrc(tmp_path / "stack.mrcs", vol, 4.0, stack=True)
    assert load_templates(tmp_path / "map.mrc", 7).kind == "map"
    assert len(load_templates(tmp_path / "map.mrc", 7).images) == 7
    assert load_templates(tmp_path / "stack.mrcs", 7).kind == "classes"
    # --template-pixel-size overrides the header (and so the templates' scale in picking)
    assert load_templates(tmp_path / "stack.mrcs", pixel_size_A=8.0).pixel_size_A == 8.0
    assert load_templates(tmp_path / "stack.mrcs").pixel_size_A == pytest.approx(4.0)


def test_cli_template_pixel_size_changes_the_picks(field, tmp_path):
    volume, image, truth = field
    write_mrc(tmp_path / "mic.mrc", image, PIXEL_A)
    write_mrc(tmp_path / "map.mrc", volume, PIXEL_A)
    base = ["--diameter", "110", "--method", "template", "--templates", str(tmp_path / "map.mrc")]
    base += ["--template-views", "4", "--angle-step", "30"]
    (a, fa), _ = _pick(tmp_path, "a", *base)
    # the header says 4 Å/px; read as 8 Å/px the templates are twice the particles' size
    (b, fb), _ = _pick(tmp_path, "b", *base, "--template-pixel-size", str(2 * PIXEL_A))
    assert len(a) != len(b) or not np.allclose(fa, fb)
