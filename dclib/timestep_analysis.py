"""Where in (t, eps) a classification's evidence lies: the analyses of Sec. 3.3 and Figs. 2-4 on an ErrorSet.

Each function reduces a scored :class:`~dclib.experiments.ErrorSet` (or scores one per strategy): the spread of
errors over eps and its paired difference across classes (Fig. 2), accuracy from each timestep alone (Fig. 3),
timestep strategies with k trials (Fig. 4), and how far apart two classes stay once noised (an ideal observer's
d', which explains where a single timestep can tell classes apart).
"""
from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np
import pandas as pd
import torch

from .data.common import stable_seed
from .data.shapes import attribute_variants
from .experiments import ErrorSet, score_dataset
from .plan import even_cycle_plan, even_plan, fixed_plan, strided_positions, uniform_plan
from .prompts import Conditionings


def separation_by_timestep(adapter, x0_a: torch.Tensor, x0_b: torch.Tensor) -> np.ndarray:
    """How far apart two clean samples stay once noised, at every timestep of the model's schedule: the
    distance between the means of x_t given x0_a and given x0_b, in units of the noise's standard deviation
    (an ideal observer's d'; sqrt(abar_t / (1 - abar_t)) * ||x0_a - x0_b|| for DDPM schedules).

    x0_a, x0_b: clean samples [n, ...] (``adapter.encode_images``). Returns [n, T]. Where it is well above
    1, x_t alone shows which of the two it came from, and a conditioning that tells them apart barely
    changes the best noise prediction.
    """
    t = torch.arange(adapter.num_train_timesteps, device=adapter.device)
    one = torch.ones(len(t), 1, device=adapter.device)
    signal = adapter.q_sample(one, torch.zeros_like(one), t).cpu()  # sqrt(abar_t), or 1 - sigma_t
    noise_sd = adapter.q_sample(torch.zeros_like(one), one, t).cpu()  # sqrt(1 - abar_t), or sigma_t
    distance = (x0_a.float() - x0_b.float()).flatten(1).norm(dim=1).cpu()
    return (distance[:, None] * (signal / noise_sd).T).numpy()


def true_conditioning(error_set: ErrorSet, image: int) -> int:
    """The first conditioning standing for image ``image``'s true class (a prompt CSV may give a class several)."""
    return int(np.flatnonzero(np.asarray(error_set.class_idx) == error_set.labels[image])[0])


def noise_variance_summary(error_set: ErrorSet, n_timesteps: int, n_noises: int) -> pd.DataFrame:
    """Why the paper shares (t, eps) across classes (Sec. 3.3): per image, the spread over eps at a fixed t of the
    true class's error, and of its paired difference to every other class (averaged over t and classes).
    ``error_set`` is scored on a plan of ``n_timesteps`` timesteps with ``n_noises`` eps each (``even_plan(...,
    n_trials=n_noises)``)."""
    rows = []
    for i in range(error_set.n_images):
        e = error_set.errors[i].reshape(len(error_set.class_idx), n_timesteps, n_noises)
        true = e[true_conditioning(error_set, i)]
        others = np.asarray(error_set.class_idx) != error_set.labels[i]
        rows.append({"image": error_set.ids[i], "std of error over eps": true.std(-1).mean(),
                     "std of paired difference over eps": (e[others] - true[None]).std(-1).mean()})
    return pd.DataFrame(rows)


class PairedErrorCurves(NamedTuple):
    """One image's errors on a plan of ``n_timesteps`` timesteps with ``n_noises`` eps each, for its true class
    and for the closest wrong one (:func:`paired_error_curves`)."""
    timesteps: np.ndarray  # [n_timesteps]
    true_errors: np.ndarray  # [n_timesteps, n_noises]: the true class's first conditioning
    other_errors: np.ndarray  # [n_timesteps, n_noises]: the closest wrong conditioning, on the same (t, eps)
    true_class: int
    other_class: int


def paired_error_curves(error_set: ErrorSet, image: int, n_timesteps: int, n_noises: int) -> PairedErrorCurves:
    """Fig. 2's curves for image ``image``: the error of its true class and of the closest wrong conditioning (the
    lowest mean error among conditionings of other classes) at each timestep, one curve per eps. ``error_set`` is
    scored on ``even_plan(n_timesteps, T, n_trials=n_noises)``."""
    label = int(error_set.labels[image])
    order = np.argsort(error_set.errors[image].mean(-1))  # conditionings from best to worst
    other = int(next(c for c in order if error_set.class_idx[c] != label))  # the closest wrong class
    shape = (n_timesteps, n_noises)
    return PairedErrorCurves(np.asarray(error_set.timesteps[image]).reshape(shape)[:, 0],
                             error_set.errors[image, true_conditioning(error_set, image)].reshape(shape),
                             error_set.errors[image, other].reshape(shape), label, int(error_set.class_idx[other]))


def accuracy_by_sample_count(error_sets: dict[str, ErrorSet], grid: int, counts: Sequence[int]):
    """Accuracy (95% interval) of each setting with k evenly spaced timesteps, k in ``counts``: k strided points of
    the ``grid`` the sets were scored on, so each k sees the noise a direct run with those timesteps would.
    Returns (table with setting / timesteps / accuracy / ci_low / ci_high, {(setting, k): per-image correctness})."""
    rows, right = [], {}
    for k in counts:
        columns = strided_positions(grid, k)
        for name, s in error_sets.items():
            right[name, k] = s.predictions(columns) == s.labels
            acc, low, high = s.accuracy_ci(columns)
            rows.append({"setting": name, "timesteps": k, "accuracy": acc, "ci_low": low, "ci_high": high})
    return pd.DataFrame(rows), right


def timestep_strategies(n_max: int, num_train_timesteps: int = 1000, seed: int = 0) -> dict:
    """The timestep strategies of the paper's Fig. 4, each up to ``n_max`` trials per class: {name: plan, or a
    function of the image index giving its plan (Uniform draws its timesteps per image)}. The first k samples of
    each plan are the strategy with k trials."""
    T = num_train_timesteps
    return {
        "Uniform": lambda i: uniform_plan(n_max, T, np.random.default_rng(stable_seed(seed, "uniform", i))),
        "{0}": fixed_plan([0], n_max),
        "{500}": fixed_plan([500], n_max),
        "{1000}": fixed_plan([T - 1], n_max),
        "{0, 500, 1000}": fixed_plan([0, 500, T - 1], n_max),
        "{475, 500, 525}": fixed_plan([475, 500, 525], n_max),
        "Even 5": even_cycle_plan(5, n_max, T),
        "Even 10": even_cycle_plan(10, n_max, T),
    }


def compare_timestep_strategies(classifier, dataset, conditionings: Conditionings, trial_counts: Sequence[int],
                                n_images: int | None = None, seed: int = 0, batch_size: "int | str" = "auto"):
    """Fig. 4: accuracy of each :func:`timestep_strategies` strategy with k trials per class for k in
    ``trial_counts`` (the first k samples of one run), and of dclib's default, k evenly spaced timesteps (its own
    run for each k). Returns (table with strategy / trials / accuracy / ci_low / ci_high, {strategy: per-image
    correctness at the largest k} with the default as "Even N")."""
    T, n_max = classifier.adapter.num_train_timesteps, max(trial_counts)
    rows, right = [], {}
    for name, plan in timestep_strategies(n_max, T, seed).items():
        errors = score_dataset(classifier, dataset, plan, conditionings, n_images=n_images, seed=seed,
                               batch_size=batch_size, progress=False)
        right[name] = errors.predictions() == errors.labels
        for k in trial_counts:
            acc, low, high = errors.accuracy_ci(list(range(k)))
            rows.append({"strategy": name, "trials": k, "accuracy": acc, "ci_low": low, "ci_high": high})
    for k in trial_counts:
        errors = score_dataset(classifier, dataset, even_plan(k, T), conditionings, n_images=n_images, seed=seed,
                               batch_size=batch_size, progress=False)
        if k == n_max:
            right["Even N"] = errors.predictions() == errors.labels
        acc, low, high = errors.accuracy_ci()
        rows.append({"strategy": "Even N (dclib default)", "trials": k, "accuracy": acc, "ci_low": low, "ci_high": high})
    return pd.DataFrame(rows), right


def single_timestep_accuracy(error_set: ErrorSet) -> pd.DataFrame:
    """Fig. 3: accuracy (95% interval) from each sample alone, for an error set scored on one noise per timestep
    (``Plan.from_timesteps``): one row per timestep."""
    rows = []
    for j, t in enumerate(error_set.timesteps[0]):
        acc, low, high = error_set.accuracy_ci([j])
        rows.append({"t": int(t), "accuracy": acc, "ci_low": low, "ci_high": high})
    return pd.DataFrame(rows)


def attribute_separation(classifier, task: str, n_scenes: int) -> np.ndarray:
    """Median over ``n_scenes`` procedural one-object scenes of how far apart (d', :func:`separation_by_timestep`)
    the scene rendered as class 0 of ``task`` and as each other class stay in x_t, at every timestep [T]: where
    it is far above 1 the noised image alone tells the classes apart."""
    variants = attribute_variants(task, n_scenes)  # [scenes, classes, 32, 32, 3]
    x0 = torch.stack([classifier.encode_image(img)[0] for img in variants.reshape(-1, *variants.shape[2:])])
    x0 = x0.view(len(variants), variants.shape[1], *x0.shape[1:])
    d = np.concatenate([separation_by_timestep(classifier.adapter, x0[:, 0], x0[:, k]) for k in range(1, x0.shape[1])])
    return np.median(d, axis=0)
