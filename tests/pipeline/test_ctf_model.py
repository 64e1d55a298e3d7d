import numpy as np
import pytest

from pipeline.ctf_model import (
    CTFParams,
    chi,
    ctf_2d,
    electron_wavelength_A,
    frequency_grid,
)


def test_wavelengths_match_field_values():
    assert electron_wavelength_A(300) == pytest.approx(0.01969, abs=2e-5)
    assert electron_wavelength_A(200) == pytest.approx(0.02508, abs=2e-5)


def test_astigmatism_convention():
    # Along the U axis the defocus is U, perpendicular it is V.
    params = CTFParams(20000, 16000, 30.0, amplitude_contrast=0.0)
    k = 0.1
    a = np.deg2rad(30.0)
    kx_u, ky_u = k * np.cos(a), k * np.sin(a)
    kx_v, ky_v = -k * np.sin(a), k * np.cos(a)
    lam = params.wavelength_A
    cs = params.cs_mm * 1e7
    for (kx, ky), dz in [((kx_u, ky_u), 20000), ((kx_v, ky_v), 16000)]:
        expected = np.pi * lam * dz * k**2 - 0.5 * np.pi * cs * lam**3 * k**4
        assert float(chi(np.array(kx), np.array(ky), params)) == pytest.approx(expected, rel=1e-9)


def test_normalised_swaps_u_v():
    p = CTFParams(10000, 12000, 10).normalised()
    assert p.defocus_u_A == 12000 and p.defocus_v_A == 10000 and p.defocus_angle_deg == 100 - 180


def test_ctf_2d_shape_and_dc():
    c = ctf_2d((64, 80), 1.0, CTFParams(10000, 10000, 0, amplitude_contrast=0.1))
    assert c.shape == (64, 41) and c.dtype == np.float32
    assert c[0, 0] == pytest.approx(-0.1)
    kx, ky = frequency_grid((64, 80), 1.0)
    assert kx.shape == (1, 80) and ky.shape == (64, 1)
