"""2D classification: two views of a blob volume, in random in-plane turns and shifts,
are told apart with every particle searched each iteration and with mini-batches
(``batch_size``: all but the last iteration search a random subset)."""

import numpy as np
import pytest

from pipeline.geometry import euler_to_matrix
from pipeline.reconstruction import fourier
from pipeline.reconstruction.class2d import classify_2d
from pipeline.reconstruction.workspace import Workspace

from .helpers import blob_volume


@pytest.fixture(scope="module")
def two_views():
    box, n = 32, 160
    rng = np.random.default_rng(7)
    volume = blob_volume(box, np.random.default_rng(8), 10, (1.5, 3.0))
    truth = np.arange(n) % 2
    # view 0 from the top, view 1 from the side; each particle turned in-plane at random
    tilt = np.where(truth == 0, 0.0, 90.0)
    rotations = euler_to_matrix(np.zeros(n), tilt, rng.uniform(0, 360, n))
    plane = fourier.half_plane(box)
    values = fourier.project(fourier.pad_fourier(volume), rotations, plane, plane.kx.size)
    scale = float(np.sqrt(np.mean(np.abs(values) ** 2)))
    noise = rng.standard_normal(values.shape) + 1j * rng.standard_normal(values.shape)
    values = (values + 0.7 * scale * noise).astype(np.complex64)
    k = plane.kx.size
    ws = Workspace(values, np.ones((n, k), np.float32), np.ones(k, np.float32), plane, 4.0)
    return ws, truth


def _purity(assignment, truth) -> float:
    agree = np.mean(assignment == truth)
    return max(agree, 1 - agree)


@pytest.mark.parametrize("batch_size", [None, 40])
def test_two_views_are_told_apart(two_views, batch_size):
    ws, truth = two_views
    messages = []
    result = classify_2d(
        ws,
        2,
        np.random.default_rng(1),
        n_iterations=6,
        resolution_A=12.0,
        batch_size=batch_size,
        progress=messages.append,
    )
    assert _purity(result.assignment, truth) >= 0.95
    searched = [int(m.split(" of ")[1].split()[0]) for m in messages]
    # the option changes what each iteration searches; the last one searches all
    expected = 160 if batch_size is None else 40
    assert searched[:-1] == [expected] * 5 and searched[-1] == 160
