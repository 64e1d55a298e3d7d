"""`cryofac pick` end to end on MRC files."""

from __future__ import annotations

import numpy as np
import pandas as pd
import starfile
from click.testing import CliRunner

from cryofac.cli import cli as main
from pipeline.io.mrc import write_mrc
from pipeline.picking.coords import read_coordinates
from pipeline.picking.evaluate import match_picks


def test_pick_cli_writes_coordinates_and_reports_bad_inputs(synthetic, tmp_path):
    image, truth = synthetic.simulate(
        shape=(768, 768),
        pixel_size_A=2.0,
        n_particles=20,
        n_contaminants=1,
        rng=np.random.default_rng(11),
    )
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
