"""The one training loop every recipe runs: optimizer step, EMA update, periodic evaluation, history.

A recipe supplies a step function (draw a batch, return the loss) and, optionally, an evaluation of the EMA
weights; the loop owns what is the same everywhere: the warm-up + cosine learning rate, gradient clipping,
the EMA, intermediate checkpoints and the history rows ``{"step", "train_loss", **evaluation}``. With a
:class:`ResumeFile` it also keeps, every few steps, what continuing needs, so a run stopped anywhere (a session
that ends, a killed process) goes on from there and ends with the same weights as one never stopped.
"""
from __future__ import annotations

import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
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
    resumed_from: int = 0  # the step a resumed run went on from (0: it started afresh)
    #: seconds the steps before ``resumed_from`` took in the processes that ran them (0.0 for a fresh run; None when
    #: the saved run did not record them)
    earlier_seconds: float | None = 0.0


@dataclass(frozen=True)
class ResumeFile:
    """Where :func:`train_loop` keeps what continuing needs every ``every`` steps: the step, the model, optimizer and
    EMA weights, the losses and history, torch's global generator and the recipe's own random state
    (``get_state()``, a dict of tensors and plain values, given back to ``set_state``), and the seconds the steps so
    far took (summed over the processes that ran them, so a stopped run's card still gives its training time).
    Written with torch.save to a new file renamed into place, read with ``weights_only=True``; the recipe deletes it
    once the final weights are saved (:meth:`done`), so a process killed while saving them still goes on from the
    last save.

    A saved run of another recipe or step count (``key``) is refused. One saved by other dclib code, another torch
    or another thread count is continued with a warning: its steps may round differently from an unstopped run's
    (a code change may change more), which the warning says and :attr:`TrainingLog.resumed_from` records."""

    path: Path
    every: int
    get_state: Callable[[], dict]
    set_state: Callable[[dict], None]
    key: str = ""  # what the run is (recipe, steps): a saved run of anything else is refused, never continued

    def __post_init__(self):
        if self.every < 1:
            raise ValueError(f"a resumable run saves every N >= 1 steps, got {self.every}")

    @staticmethod
    def made_with() -> dict:
        from ..error_cache import source_fingerprint  # dclib's source hash, as the error cache keys errors

        return {"dclib": source_fingerprint()[:16], "torch": str(torch.__version__), "threads": torch.get_num_threads()}

    def save(self, step: int, model, opt, ema, history, losses, seconds: float | None = None) -> None:
        state = {"key": self.key, "step": step, "seconds": seconds, "model": model.state_dict(),
                 "optimizer": opt.state_dict(), "ema": None if ema is None else ema.model.state_dict(),
                 "history": history, "losses": losses, "torch_rng": torch.get_rng_state(), "recipe": self.get_state(),
                 "made_with": self.made_with()}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        torch.save(state, tmp)
        os.replace(tmp, self.path)

    def load(self, model, opt, ema) -> tuple[int, list, list, float | None]:
        """Restore a saved run into ``model``, ``opt`` and ``ema``: (step, history, losses, seconds so far; None if
        the run did not record them); (0, [], [], 0.0) if none."""
        if not self.path.exists():
            return 0, [], [], 0.0
        state = torch.load(self.path, weights_only=True)
        if state.get("key") != self.key:
            raise ValueError(f"{self.path} holds a stopped run of another recipe or step count: delete it to start "
                             "afresh, or train into another folder")
        if state.get("made_with") != self.made_with():
            warnings.warn(f"{self.path}: going on from step {state['step']} of a run saved with "
                          f"{state.get('made_with') or 'unrecorded code'}, now {self.made_with()}: the steps after it "
                          "may differ from an unstopped run's", stacklevel=2)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        if ema is not None:
            ema.model.load_state_dict(state["ema"])
        torch.set_rng_state(state["torch_rng"])
        self.set_state(state["recipe"])
        seconds = state.get("seconds")
        return int(state["step"]), list(state["history"]), list(state["losses"]), \
            None if seconds is None else float(seconds)

    def done(self) -> None:
        """The run's final weights are saved: nothing left to go on from."""
        self.path.unlink(missing_ok=True)
        if self.path.parent.is_dir() and not any(self.path.parent.iterdir()):
            self.path.parent.rmdir()


def train_loop(model: torch.nn.Module, opt: torch.optim.Optimizer, step_loss: Callable[[int], StepLoss], steps: int,
               *, lr: float, warmup: int, grad_clip: float, ema: EMA | None = None,
               after_step: Callable[[], None] | None = None,
               evaluate: Callable[[torch.nn.Module, int], dict] | None = None, eval_every: int = 0,
               train_loss_window: int | None = None, describe: Callable[[dict], dict] | None = None,
               checkpoints: Sequence[int] = (), save_checkpoint: Callable[[int], None] | None = None,
               resume: ResumeFile | None = None, desc: str = "train", progress: bool = True) -> TrainingLog:
    """Run ``steps`` optimizer steps of ``model``.

    ``after_step`` runs right after the optimizer step (e.g. clamping a parameter), before the EMA sees the
    weights. Every ``eval_every`` steps and at the last one, ``evaluate(weights, step)`` scores the EMA weights
    (the live ones without ``ema``) and the history gets ``{"step", "train_loss", **that}``, ``train_loss``
    being the mean logged loss of the last ``train_loss_window`` steps (default ``eval_every``);
    ``describe(row)`` gives the progress-bar fields then. ``save_checkpoint(step)`` runs at each step of
    ``checkpoints`` before the last (the last one is the recipe's to save). ``resume`` (:class:`ResumeFile`) goes
    on from a saved run if there is one and saves every ``resume.every`` steps; the caller calls ``resume.done()``
    once it has saved the final weights.
    """
    window = train_loss_window or eval_every
    start, history, losses, earlier = resume.load(model, opt, ema) if resume is not None else (0, [], [], 0.0)
    started = time.perf_counter()
    bar = tqdm(range(start, steps), desc=desc, disable=not progress, initial=start, total=steps)
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
        if resume is not None and done % resume.every == 0 and done < steps:
            resume.save(done, model, opt, ema, history, losses,
                        None if earlier is None else earlier + time.perf_counter() - started)
    return TrainingLog(history, losses, start, earlier)
