"""Scoring picks against a ground truth: one-to-one matching within a distance."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class PickScore:
    """Precision, recall and F1 of picks matched one-to-one to true centres."""

    n_picks: int
    n_true: int
    n_matched: int

    @property
    def precision(self) -> float:
        return self.n_matched / self.n_picks if self.n_picks else 0.0

    @property
    def recall(self) -> float:
        return self.n_matched / self.n_true if self.n_true else 0.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0


def match_picks(picks_px: np.ndarray, truth_px: np.ndarray, tolerance_px: float) -> PickScore:
    """Maximum one-to-one matching of picks to true centres closer than ``tolerance_px``.

    Uses the Hungarian algorithm on distances with pairs beyond the tolerance forbidden, so
    the number of matches is the largest possible. Coordinates are (x, y) in pixels.
    """
    from scipy.optimize import linear_sum_assignment

    picks = np.asarray(picks_px, dtype=np.float64).reshape(-1, 2)
    truth = np.asarray(truth_px, dtype=np.float64).reshape(-1, 2)
    if len(picks) == 0 or len(truth) == 0:
        return PickScore(len(picks), len(truth), 0)
    dist = np.linalg.norm(picks[:, None, :] - truth[None, :, :], axis=2)
    allowed = dist < tolerance_px
    cost = np.where(allowed, dist, 1e9)
    rows, cols = linear_sum_assignment(cost)
    return PickScore(len(picks), len(truth), int(allowed[rows, cols].sum()))
