"""Fixtures of the simulator tests: cached ground-truth maps (computed once per machine)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def volume96():
    """Apoferritin potential, box 96 at 1.5 Å (cached under ~/.cache/cryofac)."""
    from pipeline.simulate import reference_volume

    return reference_volume(96, 1.5)


@pytest.fixture(scope="session")
def volume64():
    """Apoferritin potential, box 64 at 2.5 Å: the small map of micrograph/movie tests."""
    from pipeline.simulate import reference_volume

    return reference_volume(64, 2.5)
