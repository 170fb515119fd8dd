"""DiT (DiTPipeline): class-conditional latent transformer with learned sigma (eps and variance outputs)."""
from __future__ import annotations

from typing import Sequence

import torch

from ..images import ImageInput, adm_center_crop, preprocess
from .base import DiffusionAdapter, VAELatents, class_index_tensor, id2label_of, place


class DiTAdapter(VAELatents, DiffusionAdapter):
    def __init__(self, pipe, device="cpu", dtype=torch.float32, resolution: int | None = None,
                 id2label: dict | None = None):
        super().__init__(pipe.scheduler, device, dtype)
        self.transformer = pipe.transformer
        self.prediction_type = pipe.scheduler.config.get("prediction_type", "epsilon")
        cfg = self.transformer.config
        self.latent_channels = cfg.in_channels
        self.learned_variance = cfg.out_channels == 2 * cfg.in_channels
        self._set_vae(pipe.vae, cfg.sample_size, resolution)
        self.num_classes = int(cfg.num_embeds_ada_norm)
        id2label = id2label_of(pipe, id2label)
        self.class_names = [id2label.get(i, str(i)) for i in range(self.num_classes)]
        for module in (self.transformer, self.vae):
            place(module, self.device, self.dtype)

    def preprocess(self, image: ImageInput) -> torch.Tensor:
        """As DiT was trained and the official DiT evaluation prepares images: ADM's center crop."""
        return preprocess(image, self.resolution, self.image_channels, crop=adm_center_crop)

    def _encode_conditions(self, labels: Sequence[int]) -> torch.Tensor:
        return class_index_tensor(labels, self.num_classes, self.device)

    def null_condition(self):
        # DiT's class embedding table has one extra row, index num_classes, for the dropped label.
        return torch.tensor([self.num_classes], device=self.device)

    def _forward(self, x_t, t, cond):
        return self.transformer(x_t, timestep=t, class_labels=cond).sample
