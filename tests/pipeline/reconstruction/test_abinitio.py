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


def test_explore_iterations_set_how_long_the_starts_run_side_by_side(tmp_path):
    """``explore_iterations`` is how many iterations every start runs before the one that
    best explains the held-out particles goes on alone: with all of them, each start
    reaches the last iteration and is judged there; with one, only the winner does."""
    from pipeline.reconstruction.abinitio import abinitio
    from pipeline.reconstruction.particles import load_particles
    from pipeline.reconstruction.workspace import build_workspace
    from pipeline.simulate.particles import simulate_particle_stack, write_particle_stack
    from pipeline.simulate.volume import blob_volume

    volume = blob_volume(24, np.random.default_rng(0))
    images, truth = simulate_particle_stack(volume, 100, 8.0, snr=1.0, rng=1)
    particles = load_particles(write_particle_stack(tmp_path, images, truth))
    ws = build_workspace(particles.images, particles.ctf_params, 8.0, "C1")

    def messages(explore: int) -> list[str]:
        said: list[str] = []
        abinitio(
            ws, np.random.default_rng(2), n_iterations=3, batch_size=20, n_starts=2,
            explore_iterations=explore, progress=lambda text, *a, **k: said.append(text),
        )  # fmt: skip
        return said

    side_by_side = messages(3)
    assert any("start 2/2, iteration 2" in m for m in side_by_side)
    assert not any(m.startswith("ab-initio iteration") for m in side_by_side)
    assert any("kept (held-out scores" in m for m in side_by_side)
    early = messages(1)
    assert not any("iteration 2" in m and "start" in m for m in early)
    assert any(m.startswith("ab-initio iteration 2") for m in early)


def test_rounds_judge_the_starts_again_and_halve_them(tmp_path):
    """With ``rounds`` the starts are judged that many times on the held-out particles,
    the best ``keep_fraction`` of them going on each time (successive halving): 4 starts,
    3 rounds, keeping half → 4, 2 then 1 judged; keeping all → every start at every
    round; the default one round judges all 4 once, at the end of the exploration."""
    from pipeline.reconstruction.abinitio import abinitio
    from pipeline.reconstruction.particles import load_particles
    from pipeline.reconstruction.workspace import build_workspace
    from pipeline.simulate.particles import simulate_particle_stack, write_particle_stack
    from pipeline.simulate.volume import blob_volume

    volume = blob_volume(24, np.random.default_rng(0))
    images, truth = simulate_particle_stack(volume, 160, 8.0, snr=1.0, rng=1)
    particles = load_particles(write_particle_stack(tmp_path, images, truth))
    ws = build_workspace(particles.images, particles.ctf_params, 8.0, "C1")

    def judged(**kwargs) -> list[tuple[int, list[int], int]]:
        seen: list[tuple[int, list[int], int]] = []

        def keep(maps, scores, best, info):
            assert len(maps) == len(scores) == len(info["starts"])
            # the best is the highest score, and every map is a full volume
            assert scores[best] == max(scores) and maps[0].shape == (24, 24, 24)
            seen.append((info["iteration"], info["starts"], info["starts"][best]))

        abinitio(
            ws, np.random.default_rng(2), n_iterations=6, batch_size=20, n_starts=4,
            explore_iterations=6, on_judged=keep, **kwargs,
        )  # fmt: skip
        return seen

    halving = judged(rounds=3, keep_fraction=0.5)
    # (the third round has one start left: nothing to judge)
    assert [(it, len(s)) for it, s, _ in halving] == [(2, 4), (4, 2)]
    # the survivors of a round are its best-scored starts
    assert halving[0][2] in halving[1][1]
    every = judged(rounds=3, keep_fraction=1.0)
    assert [(it, len(s)) for it, s, _ in every] == [(2, 4), (4, 4), (6, 4)]
    once = judged()
    assert [(it, len(s)) for it, s, _ in once] == [(6, 4)]


def test_sampled_posterior_changes_the_model_and_bad_names_are_refused(tmp_path):
    """``posterior="sampled"`` (the default) adds poses drawn from each particle's
    posterior over the whole grid instead of its best ones ("top"): same particles and
    seed, another model; an unknown name is refused before any work."""
    from pipeline.reconstruction.abinitio import abinitio
    from pipeline.reconstruction.particles import load_particles
    from pipeline.reconstruction.workspace import build_workspace
    from pipeline.simulate.particles import simulate_particle_stack, write_particle_stack
    from pipeline.simulate.volume import blob_volume

    volume = blob_volume(24, np.random.default_rng(0))
    images, truth = simulate_particle_stack(volume, 80, 8.0, snr=1.0, rng=1)
    particles = load_particles(write_particle_stack(tmp_path, images, truth))
    ws = build_workspace(particles.images, particles.ctf_params, 8.0, "C1")

    def model(**kwargs) -> np.ndarray:
        return abinitio(ws, np.random.default_rng(2), n_iterations=3, batch_size=20, **kwargs)

    top, sampled = model(posterior="top"), model(posterior="sampled", samples=5)
    assert top.shape == sampled.shape == (24, 24, 24)
    assert np.abs(top - sampled).max() > 1e-3 * np.abs(top).max()
    # the same seed gives the same sampled model
    np.testing.assert_array_equal(sampled, model(posterior="sampled", samples=5))
    with pytest.raises(ValueError, match="posterior"):
        model(posterior="best")
    with pytest.raises(ValueError, match="temperature"):
        model(temperature=0.0)
