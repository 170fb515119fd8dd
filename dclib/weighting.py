"""Timestep weighting learned from a few labels (an extension; off by default everywhere).

Algorithm 1 averages the errors of all timesteps with equal weight (the paper's "uniform" w_t = 1). Some
timesteps separate the classes better than others (Fig. 3), so a weighted mean can classify better. Here the
timesteps of a plan are grouped into ``n_bins`` contiguous bins and a non-negative weight per bin is fitted on a
small labelled set by maximising the likelihood of softmax(-sum_b w_b e_cb) over the classes, where e_cb is the
mean error of class c over bin b. The weights carry the softmax temperature too; they are reported normalised
to mean 1. Accuracy must be judged on images the weights were not fitted on. Every bin needs a sample of every
image, so a plan with fewer timesteps than ``n_bins`` is fitted with fewer bins (:func:`usable_bins`), and
:func:`judge_on_held_out` says so in the weights' ``note``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from .errors import InputError
from .stats import clopper_pearson


def bin_errors(errors: np.ndarray, timesteps: np.ndarray, class_idx: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """errors [n_images, n_cond, n_samples] -> per-class, per-bin mean errors [n_images, n_classes, n_bins].

    A class with several conditionings takes, per image, its conditioning with the lowest overall mean (as
    Algorithm 1 would pick it)."""
    errors, timesteps, class_idx = np.asarray(errors, float), np.asarray(timesteps), np.asarray(class_idx)
    which = np.digitize(timesteps, edges[1:-1])  # [n_images, n_samples] bin of each sample
    n_bins = len(edges) - 1
    per_cond = np.stack([np.where((which == b)[:, None, :], errors, 0).sum(-1)
                         / np.maximum((which == b).sum(-1), 1)[:, None] for b in range(n_bins)], -1)
    if np.any([(which == b).sum(-1).min() == 0 for b in range(n_bins)]):
        raise InputError("every timestep bin needs at least one sample per image: use fewer bins")
    n_classes = int(class_idx.max()) + 1
    overall = errors.mean(-1)
    out = np.empty((errors.shape[0], n_classes, n_bins))
    for k in range(n_classes):
        conds = np.flatnonzero(class_idx == k)
        best = conds[overall[:, conds].argmin(1)]
        out[:, k] = per_cond[np.arange(errors.shape[0]), best]
    return out


def usable_bins(timesteps: np.ndarray, n_bins: int, num_train_timesteps: int) -> int:
    """The most equal-width bins over [0, T), at most ``n_bins`` and at most the number of distinct timesteps
    of any image (``timesteps`` [n_images, n_samples]), that each hold a sample of every image, as
    :func:`bin_errors` needs: min(n_bins, n_timesteps) for an even plan."""
    timesteps = np.asarray(timesteps)
    if n_bins < 1:
        raise InputError(f"n_bins must be at least 1, got {n_bins}")
    if not timesteps.size:
        return n_bins
    most = min(n_bins, min(len(np.unique(row)) for row in timesteps))
    for b in range(most, 1, -1):
        which = np.digitize(timesteps, np.linspace(0, num_train_timesteps, b + 1)[1:-1])
        if all((which == k).any(1).all() for k in range(b)):
            return b
    return 1


@dataclass
class TimestepWeights:
    """Per-bin weights over [0, T); ``fit`` on an ErrorSet, ``predictions`` / ``accuracy`` on another."""

    n_bins: int = 10
    num_train_timesteps: int = 1000
    l2: float = 1e-3          # pulls the weights towards uniform (log-weights towards the mean)
    steps: int = 300
    weights: np.ndarray | None = None
    note: str = ""            # one line when fewer bins were fitted than asked for (:func:`judge_on_held_out`)

    @property
    def edges(self) -> np.ndarray:
        return np.linspace(0, self.num_train_timesteps, self.n_bins + 1)

    def _binned(self, error_set) -> np.ndarray:
        return bin_errors(error_set.errors, error_set.timesteps, error_set.class_idx, self.edges)

    def fit(self, error_set) -> "TimestepWeights":
        x = torch.tensor(self._binned(error_set))  # [n, K, B]
        y = torch.tensor(np.asarray(error_set.labels), dtype=torch.long)
        # errors are ~1e-2 apart between classes: start at uniform weights with a fitted overall scale
        scale0 = 1.0 / max(float(x.std(1).mean()), 1e-8)
        log_w = torch.full((self.n_bins,), float(np.log(scale0)), dtype=torch.float64, requires_grad=True)
        opt = torch.optim.LBFGS([log_w], lr=0.5, max_iter=self.steps, line_search_fn="strong_wolfe")

        def closure():
            opt.zero_grad()
            logits = -(x * log_w.exp()).sum(-1)
            loss = torch.nn.functional.cross_entropy(logits, y) + self.l2 * ((log_w - log_w.mean()) ** 2).sum()
            loss.backward()
            return loss

        opt.step(closure)
        self.weights = log_w.detach().exp().numpy()
        return self

    @property
    def normalized(self) -> np.ndarray:
        """The fitted weights scaled to mean 1 (uniform weighting is all ones)."""
        return self.weights / self.weights.mean()

    def predictions(self, error_set, weights: np.ndarray | None = None) -> np.ndarray:
        """Class predictions with the fitted (or given, e.g. uniform ones) per-bin weights."""
        w = self.weights if weights is None else np.asarray(weights, float)
        if w is None:
            raise InputError("fit the weights first")
        return (self._binned(error_set) * w).sum(-1).argmin(1)

    def correct(self, error_set, weights: np.ndarray | None = None) -> np.ndarray:
        return self.predictions(error_set, weights) == np.asarray(error_set.labels)


#: The two weightings :func:`judge_on_held_out` compares, as its table names them.
UNIFORM, LEARNED = "uniform (Algorithm 1)", "learned weights"


def judge_on_held_out(error_set, n_fit: int, n_bins: int, num_train_timesteps: int
                      ) -> tuple[TimestepWeights, pd.DataFrame, dict[str, np.ndarray]]:
    """Fit per-bin weights on the first ``n_fit`` images of ``error_set`` and judge them on the others, against
    uniform weights (Algorithm 1) on the same errors.

    A plan whose timesteps cannot fill ``n_bins`` bins (fewer timesteps than bins) is fitted with
    :func:`usable_bins` bins; the weights' ``note`` then says so in one line (else it is "").

    Returns (the fitted weights, a table of held-out accuracy with a 95% Clopper-Pearson interval per weighting,
    {weighting: per-image correctness on the held-out images}), the uniform weighting first.
    """
    fit_set, test_set = error_set.select(slice(0, n_fit)), error_set.select(slice(n_fit, None))
    used = usable_bins(error_set.timesteps, n_bins, num_train_timesteps)
    note = "" if used == n_bins else (
        f"n_bins = {n_bins} needs a timestep in every bin and the plan has "
        f"{min(len(np.unique(row)) for row in np.asarray(error_set.timesteps))} timesteps per image: "
        f"fitting {used} bins.")
    weights = TimestepWeights(n_bins=used, num_train_timesteps=num_train_timesteps, note=note).fit(fit_set)
    right = {UNIFORM: weights.correct(test_set, np.ones(used)), LEARNED: weights.correct(test_set)}
    rows = []
    for name, r in right.items():
        low, high = clopper_pearson(int(r.sum()), len(r))
        rows.append({"weighting": name, "accuracy": r.mean(), "ci_low": low, "ci_high": high, "n": len(r)})
    return weights, pd.DataFrame(rows), right
