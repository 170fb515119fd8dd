"""Pixel-space class-conditional ``UNet2DModel`` (``num_class_embeds``), saved as a DDPMPipeline folder.

Class names come from ``id2label`` registered in the pipeline config. When the class embedding table has one
row more than there are classes, that last row is the null class used for classifier-free guidance.
"""
from __future__ import annotations

from typing import Sequence

import torch

from ..errors import InputError
from .base import DiffusionAdapter, class_index_tensor, id2label_of, place


class PixelUNetAdapter(DiffusionAdapter):
    def __init__(self, pipe, device="cpu", dtype=torch.float32, resolution: int | None = None,
                 id2label: dict | None = None):
        super().__init__(pipe.scheduler, device, dtype)
        self.unet = pipe.unet
        cfg = self.unet.config
        if not cfg.get("num_class_embeds"):
            raise InputError("this UNet2DModel has no class embeddings (num_class_embeds); dclib needs a "
                             "class-conditional model")
        self.prediction_type = pipe.scheduler.config.get("prediction_type", "epsilon")
        self.image_channels = cfg.in_channels
        self.learned_variance = cfg.out_channels == 2 * cfg.in_channels
        sample_size = cfg.sample_size if isinstance(cfg.sample_size, int) else cfg.sample_size[0]
        self.resolution = resolution or sample_size
        id2label = id2label_of(pipe, id2label)
        n_embeds = int(cfg.num_class_embeds)
        self.num_classes = len(id2label) if id2label else n_embeds
        if self.num_classes > n_embeds:
            raise InputError(f"id2label names {self.num_classes} classes but the UNet has {n_embeds} embeddings")
        self.null_class = self.num_classes if n_embeds == self.num_classes + 1 else None
        self.class_names = [id2label.get(i, str(i)) for i in range(self.num_classes)]
        place(self.unet, self.device, self.dtype)

    @property
    def sample_shape(self):
        return (self.image_channels, self.resolution, self.resolution)

    def _encode_conditions(self, labels: Sequence[int]) -> torch.Tensor:
        return class_index_tensor(labels, self.num_classes, self.device)

    def null_condition(self):
        if self.null_class is None:
            raise InputError("this model was not trained with a null class, so guidance is unavailable")
        return torch.tensor([self.null_class], device=self.device)

    def _forward(self, x_t, t, cond):
        return self.unet(x_t, t, class_labels=cond).sample
