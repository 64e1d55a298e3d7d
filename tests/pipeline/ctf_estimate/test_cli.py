import mrcfile
import numpy as np
import pytest
from click.testing import CliRunner

from pipeline.cli.ctf import ctf
from pipeline.ctf_model import CTFParams
from pipeline.io.mrc import write_mrc
from pipeline.io.star import read_star, read_table

from .synth import synthetic_micrograph


def test_ctf_command_star_plots_and_garbage(tmp_path):
    truth = CTFParams(15500.0, 14500.0, 30.0, bfactor_A2=60.0)
    write_mrc(tmp_path / "good.mrc", synthetic_micrograph(truth, (768, 768), seed=4), 1.0)
    garbage = np.random.default_rng(1).integers(0, 65535, (768, 768)).astype(np.uint16)
    with mrcfile.new(tmp_path / "garbage.mrc") as m:
        m.set_data(garbage)  # mode 6
    (tmp_path / "broken.mrc").write_bytes(b"not an mrc file" * 10)
    out = tmp_path / "out"
    args = [str(tmp_path / n) for n in ("good.mrc", "garbage.mrc", "broken.mrc")]
    result = CliRunner().invoke(ctf, [*args, "--out", str(out), "--pixel-size", "1.0", "--plots"])
    assert result.exit_code == 1, result.output
    assert "garbage.mrc: " in result.output and "no Thon rings" in result.output
    assert "broken.mrc: " in result.output
    assert "2 of 3 inputs failed" in result.output
    assert "Traceback" not in result.output
    table = read_table(
        out / "micrographs_ctf.star",
        "micrographs",
        [
            "rlnMicrographName",
            "rlnDefocusU",
            "rlnDefocusV",
            "rlnDefocusAngle",
            "rlnCtfMaxResolution",
            "rlnCtfFigureOfMerit",
        ],
    )
    assert len(table) == 1
    row = table.iloc[0]
    assert row["rlnMicrographName"].endswith("good.mrc")
    assert row["rlnDefocusU"] >= row["rlnDefocusV"]
    assert (row["rlnDefocusU"] + row["rlnDefocusV"]) / 2 == pytest.approx(15000.0, abs=30.0)
    assert row["rlnDefocusU"] - row["rlnDefocusV"] == pytest.approx(1000.0, abs=100.0)
    assert row["rlnDefocusAngle"] == pytest.approx(30.0, abs=3.0)
    assert (out / "good_ctf.png").stat().st_size > 1000


# every option of `cryofac ctf` that shapes the fit (--plots: the test above; --device and
# --threads do not change it)
OPTION_CHANGES = """
--pixel-size 1.05
--voltage 200
--cs 0.01
--amplitude-contrast 0.2
--defocus-min 3050  # the 100 Å search grid moves
--defocus-max 14900  # clips the search
--min-resolution 15
--max-resolution 6
--tile 384
--phase-shift
"""


def test_every_option_changes_the_fit(tmp_path, assert_every_option_changes):
    truth = CTFParams(15500.0, 14500.0, 30.0, bfactor_A2=60.0)
    write_mrc(tmp_path / "m.mrc", synthetic_micrograph(truth, (512, 512), seed=4), 1.0)

    def fit(name: str, *extra: str) -> list:
        out = tmp_path / name
        args = [str(tmp_path / "m.mrc"), "--out", str(out), "--pixel-size", "1.0"]
        result = CliRunner().invoke(ctf, [*args, "--tile", "256", *extra])
        assert result.exit_code == 0, result.output
        blocks = read_star(out / "micrographs_ctf.star")
        return [blocks[b].to_dict("records") for b in sorted(blocks)]

    assert_every_option_changes(fit, OPTION_CHANGES)
