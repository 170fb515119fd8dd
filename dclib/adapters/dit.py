"""DiT (DiTPipeline): class-conditional latent transformer with learned sigma (eps and variance outputs)."""
from __future__ import annotations

from typing import Sequence

import torch

from ..errors import InputError
from .base import DiffusionAdapter, id2label_of, latent_from_vae, place


class DiTAdapter(DiffusionAdapter):
    def __init__(self, pipe, device="cpu", dtype=torch.float32, resolution: int | None = None,
                 id2label: dict | None = None):
        super().__init__(pipe.scheduler, device, dtype)
        self.transformer, self.vae = pipe.transformer, pipe.vae
        self.prediction_type = pipe.scheduler.config.get("prediction_type", "epsilon")
        cfg = self.transformer.config
        self.latent_channels = cfg.in_channels
        self.learned_variance = cfg.out_channels == 2 * cfg.in_channels
        self.vae_scale_factor = 2 ** (len(self.vae.config.block_out_channels) - 1)
        self.resolution = resolution or cfg.sample_size * self.vae_scale_factor
        self.num_classes = int(cfg.num_embeds_ada_norm)
        id2label = id2label_of(pipe, id2label)
        self.class_names = [id2label.get(i, str(i)) for i in range(self.num_classes)]
        for module in (self.transformer, self.vae):
            place(module, self.device, self.dtype)

    @property
    def sample_shape(self):
        side = self.resolution // self.vae_scale_factor
        return (self.latent_channels, side, side)

    def _encode(self, pixels):
        return latent_from_vae(self.vae, pixels)

    def _encode_conditions(self, labels: Sequence[int]) -> torch.Tensor:
        labels = [int(v) for v in labels]
        bad = [v for v in labels if not 0 <= v < self.num_classes]
        if bad:
            raise InputError(f"class indices must be in [0, {self.num_classes}); got {bad[:5]}")
        return torch.tensor(labels, device=self.device)

    def null_condition(self):
        # DiT's class embedding table has one extra row, index num_classes, for the dropped label.
        return torch.tensor([self.num_classes], device=self.device)

    def _forward(self, x_t, t, cond):
        return self.transformer(x_t, timestep=t, class_labels=cond).sample
