"""Stable Diffusion XL (``StableDiffusionXLPipeline``): two CLIP text encoders, a pooled text embedding and size
micro-conditioning, on VAE latents.

The UNet is an eps- (or v-) prediction DDPM model like SD 1/2, so x_t, the target and the timesteps are the
base adapter's (the scheduler's own ``alphas_cumprod``, as the training scripts' ``DDPMScheduler.add_noise``;
SDXL samples with Euler, whose table is the same).
What differs is the conditioning: the pipeline's ``encode_prompt`` gives the penultimate hidden states of both
encoders concatenated [77, 768 + 1280] and the pooled, projected embedding of the second [1280]; the UNet also
takes ``time_ids`` = (original size, crop top-left, target size), built by the pipeline's ``_get_add_time_ids``.
"""
from __future__ import annotations

from typing import Sequence

import torch

from .base import DiffusionAdapter, VAELatents, place


class StableDiffusionXLAdapter(VAELatents, DiffusionAdapter):
    """A prompt's conditioning is one row: its token embeddings [L, D] flattened, then its pooled embedding [P]
    (as for SD3), so the engine caches, indexes and expands it as for every other family."""

    text_conditioned = True
    encode_batch_size = 32  # prompts per text-encoder call

    def __init__(self, pipe, device="cpu", dtype=torch.float32, resolution: int | None = None,
                 id2label: dict | None = None):
        super().__init__(pipe.scheduler, device, dtype)
        self.pipe = pipe  # for encode_prompt and _get_add_time_ids, the pipeline's own conditioning
        self._null_cond: torch.Tensor | None = None
        self.unet = pipe.unet
        cfg = self.unet.config
        self.prediction_type = pipe.scheduler.config.get("prediction_type", "epsilon")
        self._set_vae(pipe.vae, cfg.sample_size, resolution)  # 128 latents x 8 = 1024 px for SDXL base
        self.latent_channels = cfg.in_channels
        self.learned_variance = cfg.out_channels == 2 * cfg.in_channels
        self.text_dim = cfg.cross_attention_dim
        # The pooled embedding is text_encoder_2's projection (the pipeline passes its size to _get_add_time_ids).
        self.pooled_dim = pipe.text_encoder_2.config.projection_dim
        for module in (self.unet, pipe.text_encoder, pipe.text_encoder_2):
            if module is not None:
                place(module, self.device, self.dtype)
        # SDXL's VAE overflows in float16 (NaN latents); its config says so with force_upcast, and the pipeline
        # then runs it in float32, as here.
        upcast = dtype == torch.float16 and pipe.vae.config.get("force_upcast", False)
        place(self.vae, self.device, torch.float32 if upcast else self.dtype)
        self.set_size_conditioning()

    def set_size_conditioning(self, original_size: tuple[int, int] | None = None,
                              crops_coords_top_left: tuple[int, int] = (0, 0)) -> None:
        """SDXL's micro-conditioning: the time ids (original size, crop top-left, target size).

        The default is the pipeline's own for an image of the adapter's resolution: original size = target size
        = (resolution, resolution), crop (0, 0), i.e. an uncropped image shown at its own size, which is what
        dclib's prepared image is. Pass another ``original_size`` (height, width) to tell the model the image
        was upsampled from a smaller one, as SDXL saw during training.
        """
        size = (self.resolution, self.resolution)
        time_ids = self.pipe._get_add_time_ids(
            tuple(original_size or size), tuple(crops_coords_top_left), size, dtype=self.dtype,
            text_encoder_projection_dim=self.pooled_dim)  # also checks the UNet's added embedding size
        self.time_ids = time_ids.to(self.device)  # [1, 6], the same for every prompt and sample

    @torch.inference_mode()
    def _encode_conditions(self, prompts: Sequence[str]) -> torch.Tensor:
        embeds, _, pooled, _ = self.pipe.encode_prompt(prompt=list(prompts), prompt_2=None, device=self.device,
                                                       do_classifier_free_guidance=False)
        return torch.cat([embeds.flatten(1), pooled], 1).to(self.dtype)

    def unpack_condition(self, cond: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Rows of ``encode_conditions`` -> (prompt embeds [B, L, D], pooled text embeds [B, P])."""
        return cond[:, :-self.pooled_dim].unflatten(1, (-1, self.text_dim)), cond[:, -self.pooled_dim:]

    @torch.inference_mode()
    def null_condition(self):
        # The pipeline's unconditional input for guidance: zeros where its config says force_zeros_for_empty_prompt
        # (SDXL base), else the encoded empty prompt; encode_prompt decides, as when sampling. Computed once.
        if self._null_cond is None:
            _, embeds, _, pooled = self.pipe.encode_prompt(prompt=[""], device=self.device,
                                                           do_classifier_free_guidance=True)
            self._null_cond = torch.cat([embeds.flatten(1), pooled], 1).to(self.dtype)
        return self._null_cond

    def _forward(self, x_t, t, cond):
        embeds, pooled = self.unpack_condition(cond)
        added = {"text_embeds": pooled, "time_ids": self.time_ids.expand(len(x_t), -1)}
        return self.unet(x_t, t, encoder_hidden_states=embeds, added_cond_kwargs=added).sample

    def describe(self) -> dict:
        return {**super().describe(), "time_ids": self.time_ids[0].tolist()}
