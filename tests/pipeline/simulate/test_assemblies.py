"""Issue 21: particles of other shapes (assemblies of 6Z6U subunits) and the ice gradient."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.simulate.assemblies import ASSEMBLIES, assembly_mass_kDa, assembly_structure
from pipeline.simulate.micrograph import simulate_micrograph
from pipeline.simulate.volume import SimulationError


def _extent(name: str) -> np.ndarray:
    s = assembly_structure(name)
    xyz = np.asarray([a.pos.tolist() for c in s[0] for r in c for a in r])
    xyz -= xyz.mean(0)
    _, _, vt = np.linalg.svd(xyz, full_matrices=False)
    return np.ptp(xyz @ vt.T, axis=0)


def test_assemblies_have_distinct_sizes_and_shapes():
    masses = {n: assembly_mass_kDa(n) for n in ASSEMBLIES}
    assert 80 < masses["pentamer"] < 110
    assert 100 < masses["rod"] < 130
    assert 350 < masses["cap"] < 450
    assert masses["apoferritin"] > 400
    rod, cap, apo = _extent("rod"), _extent("cap"), _extent("apoferritin")
    assert rod[0] / rod[1] > 3.0  # elongated
    assert apo[0] / apo[2] < 1.1  # round
    assert cap[0] > apo[0] + 40  # the docked pentamer sticks out
    with pytest.raises(SimulationError, match="unknown assembly"):
        assembly_structure("ribosome")


def test_ice_gradient_option_changes_the_micrograph():
    volume = np.zeros((16, 16, 16), np.float32)
    volume[6:10, 6:10, 6:10] = 5.0
    kwargs = dict(n_particles=0, n_contaminants=0, rng=3, noise=False)
    flat, _ = simulate_micrograph(volume, (256, 256), 4.0, **kwargs)
    ramp, truth = simulate_micrograph(volume, (256, 256), 4.0, ice_gradient=0.5, **kwargs)
    assert truth.extra["ice_gradient"] == 0.5

    def tilt(image):  # slope of a plane fitted to the image, relative to its mean
        yy, xx = np.mgrid[:256, :256]
        design = np.column_stack([np.ones(256 * 256), xx.ravel(), yy.ravel()])
        coef = np.linalg.lstsq(design, image.ravel(), rcond=None)[0]
        return np.hypot(coef[1], coef[2]) * 256 / image.mean()

    assert tilt(ramp) > 3 * tilt(flat) and tilt(ramp) > 0.05
    with pytest.raises(SimulationError, match="ice gradient"):
        simulate_micrograph(volume, (256, 256), 4.0, ice_gradient=1.5)
