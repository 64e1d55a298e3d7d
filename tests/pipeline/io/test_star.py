import numpy as np
import pandas as pd
import pytest

from pipeline.io.star import (
    StarError,
    read_star,
    read_table,
    shifts_table,
    write_shifts,
    write_star,
)


def test_shifts_use_relion_sign(tmp_path):
    drift = np.array([[0.0, 0.0], [1.5, -2.0], [3.0, -4.5]])
    table = shifts_table(drift)
    assert list(table["rlnMicrographFrameNumber"]) == [1, 2, 3]
    # RELION: the shift that aligns frame f onto frame 1 is minus the specimen drift
    np.testing.assert_allclose(table["rlnMicrographShiftX"], [0, -1.5, -3.0])
    np.testing.assert_allclose(table["rlnMicrographShiftY"], [0, 2.0, 4.5])
    path = write_shifts(tmp_path / "m_shifts.star", drift, {"rlnImageSizeX": 64})
    written = read_table(path, "global_shift")
    np.testing.assert_allclose(written["rlnMicrographShiftY"], [0, 2.0, 4.5])
    blocks = read_star(path)
    assert set(blocks) == {"general", "global_shift"}


def test_atomic_write_and_column_checks(tmp_path):
    df = pd.DataFrame({"rlnMicrographName": ["a.mrc"], "rlnDefocusU": [1.0]})
    path = write_star(tmp_path / "x.star", {"micrographs": df})
    assert [p.name for p in tmp_path.iterdir()] == ["x.star"]
    table = read_table(path, "micrographs", ["rlnMicrographName"])
    assert table["rlnDefocusU"].iloc[0] == 1.0
    with pytest.raises(StarError, match="x.star data_micrographs: missing column.*rlnDefocusV"):
        read_table(path, "micrographs", ["rlnDefocusU", "rlnDefocusV"])
    with pytest.raises(StarError, match="no data_optics block"):
        read_table(path, "optics")
    with pytest.raises(StarError, match="file not found"):
        read_star(tmp_path / "missing.star")
