"""Stable Diffusion 1.x / 2.x (and any StableDiffusionPipeline folder): text prompts, latent space."""
from __future__ import annotations

from typing import Sequence

import torch

from .base import DiffusionAdapter, VAELatents, place


class StableDiffusionAdapter(VAELatents, DiffusionAdapter):
    text_conditioned = True
    encode_batch_size = 32  # prompts per text-encoder call

    def __init__(self, pipe, device="cpu", dtype=torch.float32, resolution: int | None = None,
                 id2label: dict | None = None):
        super().__init__(pipe.scheduler, device, dtype)
        self.unet = pipe.unet
        self.text_encoder, self.tokenizer = pipe.text_encoder, pipe.tokenizer
        self.prediction_type = pipe.scheduler.config.get("prediction_type", "epsilon")
        self._set_vae(pipe.vae, self.unet.config.sample_size, resolution)
        self.latent_channels = self.unet.config.in_channels
        self.learned_variance = self.unet.config.out_channels == 2 * self.unet.config.in_channels
        for module in (self.unet, self.vae, self.text_encoder):
            place(module, self.device, self.dtype)

    @torch.inference_mode()
    def _encode_conditions(self, prompts: Sequence[str]) -> torch.Tensor:
        tokens = self.tokenizer(list(prompts), padding="max_length", max_length=self.tokenizer.model_max_length,
                                truncation=True, return_tensors="pt")
        return self.text_encoder(tokens.input_ids.to(self.device))[0].to(self.dtype)

    def null_condition(self):
        return self.encode_conditions([""])

    def _forward(self, x_t, t, cond):
        return self.unet(x_t, t, encoder_hidden_states=cond).sample
