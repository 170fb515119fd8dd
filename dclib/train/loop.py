"""The one training loop every recipe runs: optimizer step, EMA update, periodic evaluation, history.

A recipe supplies a step function (draw a batch, return the loss) and, optionally, an evaluation of the EMA
weights; the loop owns what is the same everywhere: the warm-up + cosine learning rate, gradient clipping,
the EMA, intermediate checkpoints and the history rows ``{"step", "train_loss", **evaluation}``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, NamedTuple, Sequence

import numpy as np
import torch
from tqdm import tqdm

from .common import EMA, cosine_lr


@dataclass(kw_only=True)
class Optimisation:
    """The settings every recipe trains with, whatever its model: AdamW (``adamw``) with warm-up and cosine
    decay, gradient clipping and EMA weights in ``train_loop``, an evaluation every ``eval_every`` steps and
    one seed for every random draw. Each recipe (a dataclass deriving from this one) sets its own values."""

    steps: int = 4000
    batch_size: int = 64
    lr: float = 1e-3
    warmup: int = 200
    weight_decay: float = 0.01
    ema_decay: float = 0.999
    grad_clip: float = 1.0
    eval_every: int = 250
    seed: int = 0

    def adamw(self, model: torch.nn.Module) -> torch.optim.AdamW:
        return torch.optim.AdamW(model.parameters(), lr=self.lr, weight_decay=self.weight_decay)


class StepLoss(NamedTuple):
    """What a recipe's step function returns."""

    loss: torch.Tensor           # what backward() sees
    logged: float                # the training loss the history reports (e.g. before a loss weighting)
    postfix: dict | None = None  # progress-bar fields shown at once (a stage without evaluations)


class TrainingLog(NamedTuple):
    history: list[dict]  # one row per evaluation
    losses: list[float]  # StepLoss.logged of every step


def train_loop(model: torch.nn.Module, opt: torch.optim.Optimizer, step_loss: Callable[[int], StepLoss], steps: int,
               *, lr: float, warmup: int, grad_clip: float, ema: EMA | None = None,
               after_step: Callable[[], None] | None = None,
               evaluate: Callable[[torch.nn.Module, int], dict] | None = None, eval_every: int = 0,
               train_loss_window: int | None = None, describe: Callable[[dict], dict] | None = None,
               checkpoints: Sequence[int] = (), save_checkpoint: Callable[[int], None] | None = None,
               desc: str = "train", progress: bool = True) -> TrainingLog:
    """Run ``steps`` optimizer steps of ``model``.

    ``after_step`` runs right after the optimizer step (e.g. clamping a parameter), before the EMA sees the
    weights. Every ``eval_every`` steps and at the last one, ``evaluate(weights, step)`` scores the EMA weights
    (the live ones without ``ema``) and the history gets ``{"step", "train_loss", **that}``, ``train_loss``
    being the mean logged loss of the last ``train_loss_window`` steps (default ``eval_every``);
    ``describe(row)`` gives the progress-bar fields then. ``save_checkpoint(step)`` runs at each step of
    ``checkpoints`` before the last (the last one is the recipe's to save).
    """
    window = train_loss_window or eval_every
    history, losses = [], []
    bar = tqdm(range(steps), desc=desc, disable=not progress)
    for step in bar:
        out = step_loss(step)
        for group in opt.param_groups:
            group["lr"] = cosine_lr(step, steps, warmup, lr)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        opt.step()
        if after_step is not None:
            after_step()
        if ema is not None:
            ema.update(model, step)
        losses.append(out.logged)
        if out.postfix:
            bar.set_postfix(out.postfix)
        done = step + 1
        if done in checkpoints and done < steps:
            save_checkpoint(done)
        if evaluate is not None and (done % eval_every == 0 or done == steps):
            row = {"step": done, "train_loss": float(np.mean(losses[-window:])),
                   **evaluate(ema.model if ema is not None else model, done)}
            history.append(row)
            if describe is not None:
                bar.set_postfix(describe(row))
    return TrainingLog(history, losses)
