"""Test doubles: a hand-checkable adapter (eps_pred = a * x_t + b_c, b_c a per-conditioning constant) and a
score callback replaying a fixed error matrix."""
import numpy as np
import torch

from dclib.adapters.base import DiffusionAdapter


class LinearScheduler:
    """Just enough of a diffusers scheduler: linear betas over 1000 steps."""

    def __init__(self, T=1000):
        self.betas = torch.linspace(1e-4, 0.02, T, dtype=torch.float32)
        self.alphas_cumprod = torch.cumprod(1 - self.betas, 0)
        self.config = type("Cfg", (), {"num_train_timesteps": T})()


class LinearAdapter(DiffusionAdapter):
    """Conditioning c (an int) predicts eps = a * x_t + offsets[c]; null conditioning is index -1."""

    resolution = 4
    image_channels = 1

    def __init__(self, offsets, a=0.5, learned_variance=False, var_value=0.0):
        super().__init__(LinearScheduler())
        self.offsets = torch.as_tensor(offsets, dtype=torch.float32)
        self.a = a
        self.learned_variance = learned_variance
        self.var_value = var_value
        self.calls = 0

    @property
    def sample_shape(self):
        return (1, 4, 4)

    def _encode_conditions(self, conditions):
        return torch.tensor([int(c) for c in conditions])

    def null_condition(self):
        return torch.tensor([-1])

    def _forward(self, x_t, t, cond):
        self.calls += len(x_t)
        offsets = torch.cat([self.offsets, torch.tensor([0.0])])  # index -1 -> 0 (the unconditional model)
        eps = self.a * x_t + offsets[cond].view(-1, 1, 1, 1)
        if self.learned_variance:
            return torch.cat([eps, torch.full_like(eps, self.var_value)], 1)
        return eps


def replay(matrix):
    """A score callback that reads a fixed matrix [n_cond, n_samples], column by plan position; also returns
    the list of plans it was called with."""
    calls = []

    def score(indices, plan):
        start = sum(len(p) for p in calls)
        calls.append(plan)
        return matrix[np.ix_(indices, range(start, start + len(plan)))]

    return score, calls
