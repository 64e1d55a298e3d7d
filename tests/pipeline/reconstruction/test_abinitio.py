"""Ab-initio posterior annealing: the tempered weights reach the asked breadth and keep order."""

import numpy as np
import pytest

from pipeline.reconstruction.abinitio import anneal_weights


def _n_eff(w: np.ndarray) -> float:
    return float(np.mean(1.0 / (w * w).sum(axis=1)))


def test_target_one_gives_the_model_posterior():
    ll = np.array([[50.0, 48.0, 10.0], [3.0, 2.0, 1.0]])
    w = anneal_weights(ll, 1.0)
    expected = np.exp(ll - ll.max(axis=1, keepdims=True))
    expected /= expected.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(w, expected, rtol=1e-12)


@pytest.mark.parametrize("target", [1.5, 3.0, 5.0])
def test_peaked_posterior_is_broadened_to_the_target(target):
    rng = np.random.default_rng(0)
    # a sharply peaked posterior: log-likelihood gaps of hundreds (n_eff ≈ 1 untempered)
    ll = -np.sort(rng.uniform(0, 800, (200, 10)), axis=1)
    ll[:, 0] = 0.0
    w = anneal_weights(ll, target)
    np.testing.assert_allclose(w.sum(axis=1), 1.0, atol=1e-12)
    assert _n_eff(w) == pytest.approx(target, rel=1e-3)
    # tempering keeps the order of the poses: best pose keeps the largest weight
    assert np.all(np.diff(w, axis=1) <= 1e-15)


def test_already_broad_posterior_is_not_sharpened():
    ll = np.zeros((5, 6))  # flat: n_eff = 6 already
    w = anneal_weights(ll, 3.0)
    np.testing.assert_allclose(w, 1.0 / 6.0)
