"""`cryofac pick` end to end on MRC files."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import starfile
from click.testing import CliRunner

from cryofac.cli import cli as main
from pipeline.io.mrc import write_mrc
from pipeline.picking.coords import read_coordinates
from pipeline.picking.evaluate import match_picks


def test_pick_cli_writes_coordinates_and_reports_bad_inputs(synthetic, tmp_path):
    image, truth = synthetic.field(768, 20, 11, n_contaminants=1)
    mic = write_mrc(tmp_path / "mic_a.mrc", image, 2.0)
    bad = tmp_path / "broken.mrc"
    bad.write_bytes(b"garbage")
    ctf = truth.ctf
    star = tmp_path / "micrographs_ctf.star"
    starfile.write(
        pd.DataFrame(
            {
                "rlnMicrographName": [str(mic), str(bad)],
                "rlnDefocusU": [ctf.defocus_u_A] * 2,
                "rlnDefocusV": [ctf.defocus_v_A] * 2,
                "rlnDefocusAngle": [ctf.defocus_angle_deg] * 2,
                "rlnCtfMaxResolution": [4.0] * 2,
                "rlnCtfFigureOfMerit": [0.3] * 2,
            }
        ),
        star,
    )
    out = tmp_path / "picks"
    result = CliRunner().invoke(
        main,
        [
            "pick",
            str(mic),
            str(bad),
            "--out",
            str(out),
            "--diameter",
            "140",
            "--ctf",
            str(star),
            "--threshold",
            "6",
        ],
    )
    assert result.exit_code != 0
    assert "broken.mrc" in result.output and "1 of 2 inputs failed" in result.output
    coords, fom = read_coordinates(out / "mic_a_autopick.star")
    score = match_picks(coords, truth.coords_px, 21.0)
    assert score.precision >= 0.9 and score.recall >= 0.9, score
    index = starfile.read(out / "autopick.star")
    assert list(index["rlnMicrographName"]) == [str(mic)]


def test_pick_cli_user_errors(tmp_path):
    mic = write_mrc(tmp_path / "m.mrc", np.zeros((256, 256), np.float32), 1.0)
    runner = CliRunner()
    result = runner.invoke(
        main, ["pick", str(mic), "--out", str(tmp_path), "--diameter", "50", "--method", "template"]
    )
    assert result.exit_code != 0 and "--templates" in result.output
    result = runner.invoke(
        main, ["pick", str(mic), "--out", str(tmp_path), "--diameter", "50", "--device", "gpu"]
    )
    assert result.exit_code != 0 and "Traceback" not in result.output


def test_each_blob_and_ctf_option_changes_the_picks(synthetic, tmp_path):
    """--max-picks, --pixel-size, --ctf and the CTF constants used when the CTF table has no
    optics block (--voltage, --cs, --amplitude-contrast) each change what is written."""
    image, truth = synthetic.field(768, 20, 11, n_contaminants=1)
    mic = write_mrc(tmp_path / "mic.mrc", image, 2.0)
    ctf = truth.ctf
    star = tmp_path / "ctf.star"
    starfile.write(
        pd.DataFrame(
            {
                "rlnMicrographName": [str(mic)],
                "rlnDefocusU": [ctf.defocus_u_A],
                "rlnDefocusV": [ctf.defocus_v_A],
                "rlnDefocusAngle": [ctf.defocus_angle_deg],
            }
        ),
        star,
    )

    def run(name, *args):
        out = tmp_path / name
        result = CliRunner().invoke(
            main, ["pick", str(mic), "--out", str(out), "--diameter", "140", *args]
        )
        assert result.exit_code == 0, result.output
        return read_coordinates(out / "mic_autopick.star")

    base_c, base_f = run("base", "--ctf", str(star))
    assert match_picks(base_c, truth.coords_px, 21.0).recall >= 0.9
    few_c, few_f = run("few", "--ctf", str(star), "--max-picks", "5")
    assert len(few_c) == 5 and np.allclose(few_f, base_f[:5])
    plain_c, plain_f = run("plain")  # no CTF: contrast inverted instead of phase-flipped
    assert len(plain_c) != len(base_c) or not np.allclose(plain_f, base_f)
    # a pixel size that is not the header's: the particles look half the size
    px_c, px_f = run("px", "--ctf", str(star), "--pixel-size", "4.0")
    assert len(px_c) != len(base_c) or not np.allclose(px_f, base_f)
    for option, value in (("--voltage", "120"), ("--cs", "0.01"), ("--amplitude-contrast", "0.3")):
        c, f = run(option.strip("-"), "--ctf", str(star), option, value)
        assert len(c) != len(base_c) or not np.allclose(f, base_f), option


def _pick(mic, out, diameter_A, *args):
    """(coordinates, figures of merit) of ``cryofac pick MIC --out OUT --diameter D ARGS``."""
    result = CliRunner().invoke(
        main, ["pick", str(mic), "--out", str(out), "--diameter", str(diameter_A), *args]
    )
    assert result.exit_code == 0, result.output
    return read_coordinates(out / f"{mic.stem}_autopick.star")


def test_shape_round_gives_the_single_round_kernel_picks(synthetic, tmp_path):
    """`--shape round` is the picker as it was before shape "any" became the default:
    identical picks to pick_blobs with a single round kernel and threshold 3; the default
    (any shape) picks differently; --shape with --method template is refused."""
    from pipeline.picking.blob import pick_blobs

    image, truth = synthetic.field(768, 20, 11, n_contaminants=1)
    mic = write_mrc(tmp_path / "mic.mrc", image, 2.0)

    def run(name, *args):
        return _pick(mic, tmp_path / name, 140, *args)

    round_c, round_f = run("round", "--shape", "round")
    old = pick_blobs(image, 2.0, 140.0, threshold_sigma=3.0)
    np.testing.assert_allclose(round_c, old.coords_px, atol=1e-3)
    np.testing.assert_allclose(round_f, old.fom, rtol=1e-4)
    any_c, any_f = run("any")
    assert len(any_c) != len(round_c) or not np.allclose(any_f, round_f)
    assert match_picks(any_c, truth.coords_px, 21.0).recall >= 0.85
    result = CliRunner().invoke(
        main,
        ["pick", str(mic), "--out", str(tmp_path / "t"), "--diameter", "140"]
        + ["--method", "template", "--templates", str(mic), "--shape", "round"],
    )
    assert result.exit_code != 0 and "--shape is used by --method blob only" in result.output


@pytest.mark.slow
def test_plain_diameter_picks_elongated_particles(tmp_path):
    """`cryofac pick --diameter 220` (the longest dimension, nothing about the shape) on a
    220 × 60 Å rod, no CTF given: the default (any shape) finds most rods at their centres
    (recall 0.68, precision 0.87 here); the single
    round kernel (`--shape round`, the default before 2026-12-07d) finds almost none
    (recall 0.08 on the benchmark's rods)."""
    from pipeline.ctf_model import CTFParams
    from pipeline.simulate.assemblies import assembly_mass_kDa, assembly_volume
    from pipeline.simulate.micrograph import protein_volume_A3, simulate_micrograph

    image, truth = simulate_micrograph(
        assembly_volume("rod", 160, 1.5),
        (1536, 1536),
        1.5,
        n_particles=40,
        ctf=CTFParams(12200.0, 11800.0, 30.0),
        dose_e_A2=40.0,
        ice_thickness_A=300.0,
        rng=11,
        excluded_volume_A3=protein_volume_A3(assembly_mass_kDa("rod") / 0.93),
    )
    mic = write_mrc(tmp_path / "rods.mrc", image, 1.5)

    def recall_precision(name, *args):
        coords, _ = _pick(mic, tmp_path / name, 220, *args)
        score = match_picks(coords, truth.coords_px, 0.3 * 220.0 / 1.5)
        return score.recall, score.precision

    recall, precision = recall_precision("any")
    assert recall >= 0.6 and precision >= 0.75, (recall, precision)
    recall_round, _ = recall_precision("round", "--shape", "round")
    assert recall_round <= 0.3, recall_round


def test_false_pick_rate_sets_the_decoy_threshold(synthetic, tmp_path):
    """`--false-pick-rate Q` (shape any, no --threshold) replaces the cells-per-pick rule
    with the decoy's count: on a sparse field (20 apoferritins on 2048², 450 Å ice) it
    drops noise picks that the default keeps, and a larger Q keeps more; refused with
    --shape round or --threshold."""
    image, truth = synthetic.apoferritin_field(2048, 20, 15000.0, 450.0, 1)
    mic = write_mrc(tmp_path / "sparse.mrc", image, 1.5)
    default_c, _ = _pick(mic, tmp_path / "default", 130.0)
    strict_c, _ = _pick(mic, tmp_path / "strict", 130.0, "--false-pick-rate", "0.05")
    loose_c, _ = _pick(mic, tmp_path / "loose", 130.0, "--false-pick-rate", "0.5")
    tolerance = 0.2 * 130.0 / 1.5
    strict = match_picks(strict_c, truth.coords_px, tolerance)
    assert strict.recall == 1.0 and len(strict_c) < len(default_c)
    assert len(loose_c) > len(strict_c)
    for extra in (["--shape", "round"], ["--threshold", "3"]):
        result = CliRunner().invoke(
            main,
            ["pick", str(mic), "--out", str(tmp_path / "x"), "--diameter", "130"]
            + ["--false-pick-rate", "0.05", *extra],
        )
        assert result.exit_code != 0 and "--false-pick-rate is used by" in result.output
