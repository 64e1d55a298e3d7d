"""Coordinate STAR files, micrograph CTF tables and pick scoring."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import starfile

from pipeline.picking.coords import (
    CoordinatesError,
    coordinate_path,
    find_ctf,
    read_coordinates,
    read_micrograph_ctfs,
    write_coordinates,
)
from pipeline.picking.evaluate import match_picks


def test_coordinates_round_trip(tmp_path):
    coords = np.array([[10.5, 20.25], [300.0, 7.0]])
    path = write_coordinates(coordinate_path(tmp_path, "/data/mic_001.mrc"), coords, [2.0, 1.0])
    assert path.name == "mic_001_autopick.star"
    back, fom = read_coordinates(path)
    np.testing.assert_allclose(back, coords)
    np.testing.assert_allclose(fom, [2.0, 1.0])
    assert "rlnCoordinateX" in path.read_text()


def test_empty_coordinates_round_trip(tmp_path):
    path = write_coordinates(tmp_path / "e_autopick.star", np.zeros((0, 2)), np.zeros(0))
    back, fom = read_coordinates(path)
    assert back.shape == (0, 2) and fom.shape == (0,)


def test_coordinate_errors(tmp_path):
    with pytest.raises(CoordinatesError, match="not found"):
        read_coordinates(tmp_path / "none.star")
    bad = tmp_path / "bad.star"
    starfile.write(pd.DataFrame({"rlnSomething": [1.0]}), bad)
    with pytest.raises(CoordinatesError, match="rlnCoordinateX"):
        read_coordinates(bad)


def test_ctf_table_with_and_without_optics(tmp_path):
    table = pd.DataFrame(
        {
            "rlnMicrographName": ["Micrographs/a.mrc", "Micrographs/b.mrc"],
            "rlnDefocusU": [15000.0, 20000.0],
            "rlnDefocusV": [14000.0, 21000.0],  # second row has V > U: normalised on read
            "rlnDefocusAngle": [10.0, 20.0],
            "rlnCtfMaxResolution": [4.0, 5.0],
            "rlnCtfFigureOfMerit": [0.2, 0.1],
        }
    )
    plain = tmp_path / "plain.star"
    starfile.write(table, plain)
    ctfs = read_micrograph_ctfs(plain, voltage_kV=200.0, cs_mm=2.7, amplitude_contrast=0.1)
    a = find_ctf(ctfs, "elsewhere/a.mrc")
    assert a.ctf.voltage_kV == 200.0 and a.ctf.defocus_u_A == 15000.0
    b = find_ctf(ctfs, "b.mrc")
    assert b.ctf.defocus_u_A == 21000.0 and b.ctf.defocus_angle_deg == pytest.approx(-70.0)
    assert find_ctf(ctfs, "c.mrc") is None
    optics = pd.DataFrame(
        {
            "rlnOpticsGroup": [1],
            "rlnVoltage": [300.0],
            "rlnSphericalAberration": [0.01],
            "rlnAmplitudeContrast": [0.07],
        }
    )
    with_optics = tmp_path / "optics.star"
    starfile.write({"optics": optics, "micrographs": table}, with_optics)
    ctfs = read_micrograph_ctfs(with_optics, voltage_kV=200.0)
    assert find_ctf(ctfs, "a.mrc").ctf.cs_mm == 0.01
    assert find_ctf(ctfs, "a.mrc").ctf.voltage_kV == 300.0


def test_match_picks_is_one_to_one():
    truth = np.array([[0.0, 0.0], [100.0, 0.0]])
    picks = np.array([[1.0, 0.0], [2.0, 0.0], [99.0, 1.0], [500.0, 500.0]])
    score = match_picks(picks, truth, 10.0)
    assert score.n_matched == 2
    assert score.precision == pytest.approx(0.5) and score.recall == pytest.approx(1.0)
    assert score.f1 == pytest.approx(2 / 3)
    assert match_picks(np.zeros((0, 2)), truth, 5.0).recall == 0.0
