"""Seeing what the model believes (Appendix D): DDIM inversion of an image under one conditioning and its
reconstruction under each candidate conditioning.

The image is mapped deterministically (DDIM, eta = 0) from x0 up to timestep ``t_start`` under
``invert_with``, then brought back to t = 0 under each conditioning. Where the reconstruction under a class
departs from the input, the model "needs" that class to explain the image.
"""
from __future__ import annotations

import numpy as np
import torch

from .errors import InputError


def ddim_timesteps(t_start: int, n_steps: int, num_train_timesteps: int = 1000) -> list[int]:
    """Increasing timesteps 0 < ... <= t_start used by the inversion (and, reversed, the reconstruction)."""
    ts = sorted({int(round(v)) for v in np.linspace(0, t_start, n_steps + 1)})
    return [t for t in ts if 0 <= t < num_train_timesteps]


@torch.inference_mode()
def _ddim_step(adapter, x, t_from: int, t_to: int, cond: torch.Tensor) -> torch.Tensor:
    abar = adapter.alphas_cumprod.to(x.device)
    a_from, a_to = abar[t_from], abar[t_to]
    t = torch.full((len(x),), t_from, dtype=torch.long, device=x.device)
    eps, _ = adapter.predict(x, t, cond.expand(len(x), *cond.shape[1:]))
    x0 = (x - (1 - a_from).sqrt() * eps) / a_from.sqrt()
    return a_to.sqrt() * x0 + (1 - a_to).sqrt() * eps


@torch.inference_mode()
def invert_and_reconstruct(adapter, x0: torch.Tensor, invert_with, reconstruct_with, t_start: int = 500,
                           n_steps: int = 25) -> tuple[torch.Tensor, torch.Tensor]:
    """Returns (the inverted x_{t_start} [C, H, W], reconstructions [len(reconstruct_with), C, H, W])."""
    if adapter.alphas_cumprod is None:
        raise InputError(f"DDIM inversion needs a diffusion (abar) schedule; {type(adapter).__name__} is a "
                         "flow-matching model")
    ts = ddim_timesteps(t_start, n_steps, adapter.num_train_timesteps)
    x = x0.to(adapter.device, torch.float32)[None]
    cond = adapter.encode_conditions([invert_with])
    for t_from, t_to in zip(ts[:-1], ts[1:]):
        x = _ddim_step(adapter, x, t_from, t_to, cond)
    inverted = x[0]
    conds = adapter.encode_conditions(list(reconstruct_with))
    x = inverted.expand(len(conds), *inverted.shape).clone()
    for t_from, t_to in zip(ts[::-1][:-1], ts[::-1][1:]):
        abar = adapter.alphas_cumprod.to(x.device)
        t = torch.full((len(x),), t_from, dtype=torch.long, device=x.device)
        eps, _ = adapter.predict(x, t, conds)
        x0_hat = (x - (1 - abar[t_from]).sqrt() * eps) / abar[t_from].sqrt()
        x = abar[t_to].sqrt() * x0_hat + (1 - abar[t_to]).sqrt() * eps
    # the last step lands on t = ts[0] = 0: one more eps prediction gives the clean estimate
    t = torch.zeros(len(x), dtype=torch.long, device=x.device)
    eps, _ = adapter.predict(x, t, conds)
    a0 = adapter.alphas_cumprod[0].to(x.device)
    recon = (x - (1 - a0).sqrt() * eps) / a0.sqrt()
    return inverted.cpu(), recon.cpu()


def to_image(adapter, x: torch.Tensor) -> np.ndarray:
    """A clean sample (pixel or latent) -> uint8 image array [H, W] or [H, W, 3]."""
    pixels = adapter.decode(x[None].to(adapter.device))[0] if hasattr(adapter, "decode") else x
    array = ((pixels.clamp(-1, 1) + 1) * 127.5).round().byte().cpu().numpy()
    return array[0] if array.shape[0] == 1 else array.transpose(1, 2, 0)
