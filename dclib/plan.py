"""Plans: which (t, eps) samples every conditioning is scored on.

A plan is a list of samples, each a timestep ``t`` in ``[0, T)`` and a repeat index ``k`` (the k-th time that
``t`` occurs in the plan). The pair ``(t, k)`` is the sample's identity: its noise is drawn from a generator
keyed by ``(seed, image id, t, k)`` (see :mod:`dclib.noise`), so the same sample gets the same noise whatever the
batch size, the device, the order of images, or which other samples the plan holds: the samples an "Even 10"
plan shares with an "Even 1000" plan, or a stage of an adaptive schedule with the full schedule, get the same noise.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

from .errors import InputError


@dataclass(frozen=True)
class Plan:
    """Samples shared by every conditioning. ``timesteps[i]`` and ``repeats[i]`` identify sample ``i``."""

    timesteps: tuple[int, ...]
    repeats: tuple[int, ...]

    def __post_init__(self):
        if len(self.timesteps) != len(self.repeats):
            raise InputError("a plan needs one repeat index per timestep")
        if len(set(zip(self.timesteps, self.repeats))) != len(self.timesteps):
            raise InputError("a plan's (timestep, repeat) pairs must be unique")

    def __len__(self) -> int:
        return len(self.timesteps)

    @classmethod
    def from_timesteps(cls, timesteps: Iterable[int]) -> "Plan":
        """A plan over ``timesteps`` in the given order; the k-th occurrence of a timestep gets repeat k."""
        ts = [int(t) for t in timesteps]
        seen: dict[int, int] = {}
        reps = []
        for t in ts:
            reps.append(seen.get(t, 0))
            seen[t] = reps[-1] + 1
        return cls(tuple(ts), tuple(reps))

    def check(self, num_train_timesteps: int) -> "Plan":
        bad = [t for t in self.timesteps if not 0 <= t < num_train_timesteps]
        if bad:
            raise InputError(
                f"timesteps must lie in [0, {num_train_timesteps}); got {sorted(set(bad))[:5]} "
                f"(the paper's t = {num_train_timesteps} is index {num_train_timesteps - 1} here)")
        return self

    def __add__(self, other: "Plan") -> "Plan":
        return Plan(self.timesteps + other.timesteps, self.repeats + other.repeats)

    @classmethod
    def concat(cls, plans: Iterable["Plan"]) -> "Plan":
        """The plans one after another (the full plan of a schedule's stages)."""
        timesteps: tuple[int, ...] = ()
        repeats: tuple[int, ...] = ()
        for p in plans:
            timesteps, repeats = timesteps + p.timesteps, repeats + p.repeats
        return cls(timesteps, repeats)

    @classmethod
    def with_trials(cls, timesteps: Iterable[int], n_trials: int = 1) -> "Plan":
        """Each of ``timesteps`` (distinct) tried with ``n_trials`` noises: repeats 0 .. n_trials - 1, in a row."""
        ts = [int(t) for t in timesteps]
        return cls(tuple(t for t in ts for _ in range(n_trials)), tuple(k for _ in ts for k in range(n_trials)))

    def keys(self) -> list[tuple[int, int]]:
        return list(zip(self.timesteps, self.repeats))


def even_timesteps(n: int, num_train_timesteps: int = 1000) -> list[int]:
    """``n`` evenly spaced timesteps exactly as the official evaluation picks them.

    ``start = T // n // 2`` and stride ``T // n``: the midpoints of ``n`` equal bins when ``n`` divides ``T``
    (n=10 -> 50, 150, ..., 950; n=1000 -> 0, ..., 999).
    """
    if n < 1 or n > num_train_timesteps:
        raise InputError(f"number of evenly spaced timesteps must be in [1, {num_train_timesteps}], got {n}")
    step = num_train_timesteps // n
    start = num_train_timesteps // n // 2
    return list(range(start, num_train_timesteps, step))[:n]


def strided_positions(grid_size: int, n: int) -> list[int]:
    """Positions of ``n`` evenly strided points of a grid of ``grid_size``, the way the official adaptive
    evaluation takes a stage's timesteps from its grid (stride ``grid_size // n``, starting half a stride in).
    """
    if not 1 <= n <= grid_size:
        raise InputError(f"cannot take {n} strided points of a grid of {grid_size}")
    stride = grid_size // n
    return list(range(stride // 2, grid_size, stride))[:n]


def even_plan(n_timesteps: int, num_train_timesteps: int = 1000, n_trials: int = 1) -> Plan:
    """Algorithm 1 with ``n_timesteps`` evenly spaced timesteps, each tried with ``n_trials`` noises."""
    return Plan.with_trials(even_timesteps(n_timesteps, num_train_timesteps), n_trials)


def fixed_plan(timesteps: Sequence[int], n_samples: int) -> Plan:
    """Cycle through a fixed timestep set (e.g. {500}, {0, 500, 999}, {475, 500, 525}) for ``n_samples``."""
    if len(timesteps) == 0:
        raise InputError("a fixed timestep set must not be empty")
    return Plan.from_timesteps(timesteps[i % len(timesteps)] for i in range(n_samples))


def even_cycle_plan(n_timesteps: int, n_samples: int, num_train_timesteps: int = 1000) -> Plan:
    """"Even k" of Fig. 4: ``k`` evenly spaced timesteps, cycled with fresh noise up to ``n_samples``."""
    return fixed_plan(even_timesteps(n_timesteps, num_train_timesteps), n_samples)


def window_plan(center: int, half_width: int, n_samples: int, step: int | None = None) -> Plan:
    """A window of timesteps around ``center`` (Fig. 4's {475, 500, 525} is center 500, half width 25)."""
    step = step or half_width or 1
    return fixed_plan(list(range(center - half_width, center + half_width + 1, step)), n_samples)


def uniform_plan(n_samples: int, num_train_timesteps: int, rng: np.random.Generator) -> Plan:
    """Timesteps drawn uniformly from ``[0, T)``, as in Algorithm 1's "Sample t ~ [1, 1000]"."""
    return Plan.from_timesteps(rng.integers(0, num_train_timesteps, size=n_samples).tolist())


def logit_normal_timesteps(n: int, num_train_timesteps: int, rng: np.random.Generator | int,
                           mean: float = 0.0, std: float = 1.0) -> list[int]:
    """``n`` timesteps drawn as flow-matching models such as SD3 were trained (Esser et al. 2024, eq. 19).

    u = sigmoid(z), z ~ N(mean, std^2), picks index floor(u T) of the scheduler's training grid, which is in
    decreasing noise (as diffusers' SD3 training scripts do); here timesteps grow with noise, so t = T - 1 - index.
    The adapter's shift still maps t to sigma. ``rng``: a numpy Generator or a seed.
    """
    if n < 0 or std <= 0:
        raise InputError("logit-normal sampling needs n >= 0 and std > 0")
    rng = np.random.default_rng(rng)
    u = 1.0 / (1.0 + np.exp(-rng.normal(mean, std, size=n)))
    index = np.minimum((u * num_train_timesteps).astype(np.int64), num_train_timesteps - 1)  # u rounds to 1
    return (num_train_timesteps - 1 - index).tolist()


def logit_normal_plan(n_samples: int, num_train_timesteps: int, rng: np.random.Generator | int,
                      mean: float = 0.0, std: float = 1.0) -> Plan:
    """Timesteps drawn from SD3's logit-normal training density (deterministic given the seed)."""
    return Plan.from_timesteps(logit_normal_timesteps(n_samples, num_train_timesteps, rng, mean, std))
