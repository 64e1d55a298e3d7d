"""Refinement options that decide how close the map gets to the true-pose map (issue 22):
marginalisation over each particle's best poses (``RefineOptions.top_k``) and keeping the
iteration whose half-maps agreed best (``RefineOptions.keep_best``)."""

import numpy as np
import pytest

from pipeline.reconstruction import refine


def test_pose_weights_are_the_posterior_of_the_scores():
    scores = np.array([[3.0, 3.0, 0.0], [2.0, 1.0, 1.0]])
    w = refine.pose_weights(scores, noise_scale=2.0)
    assert np.allclose(w.sum(axis=1), 1.0)
    assert np.isclose(w[0, 0], w[0, 1]) and w[0, 2] < 1e-3  # ll 9 vs 0
    ll = 0.5 * 2.0 * np.array([4.0, 1.0, 1.0])
    assert np.allclose(w[1], np.exp(ll) / np.exp(ll).sum())


@pytest.fixture(scope="module")
def noisy_case():
    from pipeline.simulate import particles as simulate
    from pipeline.simulate.volume import reference_volume

    vol = reference_volume(24, 8.0)
    images, truth = simulate.simulate_particle_stack(vol, 120, 8.0, snr=0.1, rng=3)
    return vol, refine.build_workspace(images, truth.ctf, 8.0)


def _run(ws, vol, **kwargs):
    return refine.refine(
        ws, vol, np.random.default_rng(0), max_iterations=3, global_iterations=2, **kwargs
    )


def test_top_k_marginalises_and_keep_best_returns_the_best_iteration(noisy_case):
    vol, ws = noisy_case
    hard = _run(ws, vol, top_k=1, keep_best=False)
    soft = _run(ws, vol, top_k=4, keep_best=False)
    # the same searches (same rng, same poses at iteration 0's best), other maps
    assert not np.allclose(hard.half_maps[0], soft.half_maps[0])
    best = _run(ws, vol, top_k=4, keep_best=True)
    per_iteration = [h["resolution_A"] for h in best.history if isinstance(h["iteration"], int)]
    kept = [h for h in best.history if h["iteration"] == "kept"]
    if int(np.argmin(per_iteration)) != len(per_iteration) - 1:
        assert kept and kept[0]["kept_iteration"] == int(np.argmin(per_iteration))
        assert not np.allclose(best.half_maps[0], soft.half_maps[0])
    else:
        assert not kept


def test_refinement_mask_follows_the_map_inside_the_sphere():
    from pipeline import backend
    from pipeline.reconstruction.grids import soft_sphere

    from .helpers import blob_volume

    vol = blob_volume(32, np.random.default_rng(2), 6, (1.5, 2.5))
    maps = (vol, vol)
    mask = backend.to_numpy(refine.RefineMask("map")(maps, 4.0))
    sphere = backend.to_numpy(soft_sphere(32, 0.45 * 32))
    assert mask.shape == vol.shape and mask.min() >= 0.0 and mask.max() <= 1.0 + 1e-6
    inside = vol > 0.2 * vol.max()
    assert np.all(mask[inside] > 0.99 * sphere[inside])  # the particle is kept
    assert mask.sum() < 0.8 * sphere.sum()  # solvent inside the sphere is not
    assert np.allclose(backend.to_numpy(refine.RefineMask("sphere")(maps, 4.0)), sphere)
    with pytest.raises(ValueError, match="refinement mask"):
        refine.RefineMask("box")(maps, 4.0)


def test_every_refine_option_reaches_refine():
    import inspect

    from pipeline.reconstruction.options import RefineOptions
    from pipeline.reconstruction.run import _refine_kwargs

    kwargs = _refine_kwargs(RefineOptions())
    params = inspect.signature(refine.refine).parameters
    assert set(kwargs) <= set(params)
    for name in (
        "mask", "mask_references", "search_margin_px", "recheck_every", "recheck_resolution_A",
    ):  # fmt: skip
        assert name in kwargs and params[name].default == getattr(RefineOptions(), name)
