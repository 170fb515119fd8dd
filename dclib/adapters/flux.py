"""FLUX.1 (``FluxPipeline``): a rectified-flow transformer on packed VAE latents, prompts through T5 and CLIP.

The noising, the velocity target eps - x0 and dclib's timestep convention are SD3's (``flow_matching.py``,
``FlowMatchingAdapter``); what is FLUX's own:

- latents: x0 = (VAE mean - shift_factor) * scaling_factor, kept as [C, h, w] for the engine (noise, crops and
  error maps are per latent pixel) and packed into 2x2 patches [h/2 * w/2, 4 C] by the pipeline's own
  ``_pack_latents`` only around the transformer call. Packing only permutes elements, so the errors are those of
  the packed tensors the model was trained on.
- sigmas: FLUX.1-dev shifts them by resolution (``use_dynamic_shifting``: mu from the image's token count
  h/2 * w/2 by ``calculate_shift``, as the pipeline computes it); schnell uses the fixed shift 1.
- timestep: the transformer takes sigma itself (the pipeline passes the scheduler timestep / 1000).
- guidance: guidance-distilled checkpoints (dev, ``transformer.config.guidance_embeds``) take a guidance scale
  as an input; dclib gives the pipeline's default. This is not classifier-free guidance (``guidance=`` of the
  scorer), which combines a conditional and an unconditional call.
- text: T5 token embeddings [L, 4096] and CLIP's pooled embedding [768] from the pipeline's ``encode_prompt``;
  the text position ids are zeros and the image ids the patch grid, as the pipeline builds them.
"""
from __future__ import annotations

from typing import Sequence

import torch

from ..errors import InputError
from .flow_matching import PromptFlowAdapter


class FluxAdapter(PromptFlowAdapter):
    """FLUX.1: T5 token embeddings and CLIP's pooled embedding, latents packed around the transformer call."""

    #: The distilled guidance scale given to guidance-embedding checkpoints: FluxPipeline's default.
    guidance_scale = 3.5

    def __init__(self, pipe, device="cpu", dtype=torch.float32, resolution: int | None = None,
                 id2label: dict | None = None):
        super().__init__(pipe, device, dtype)
        cfg = self.transformer.config
        # The transformer has no native size; the VAE's config holds the pixel size (1024 for FLUX.1), which is
        # also the pipeline's default (128 latents x 8).
        self._set_vae(pipe.vae, None, resolution or pipe.vae.config.sample_size)
        self.latent_channels = cfg.in_channels // 4  # each token packs a 2x2 patch of latent channels
        if self.resolution % (2 * self.vae_scale_factor):
            raise InputError(f"resolution {self.resolution} must be a multiple of {2 * self.vae_scale_factor} "
                             "(VAE factor x the 2x2 packing)")
        # T5 tokens per prompt: 512 for dev; schnell (the checkpoint without guidance embedding) was trained
        # with 256, which Black Forest Labs' reference code and its model card use.
        self.max_sequence_length = 512 if cfg.guidance_embeds else 256
        self._place_modules(pipe.text_encoder, pipe.text_encoder_2)
        tokens_side = self.resolution // self.vae_scale_factor // 2
        self.img_ids = pipe._prepare_latent_image_ids(1, tokens_side, tokens_side, self.device, self.dtype)
        self.txt_ids = torch.zeros(self.max_sequence_length, 3, device=self.device, dtype=self.dtype)
        self._set_sigmas(image_seq_len=tokens_side ** 2)  # mu for dynamic shifting, as the pipeline computes it

    @torch.inference_mode()
    def _encode_conditions(self, prompts: Sequence[str]) -> torch.Tensor:
        embeds, pooled, _ = self.pipe.encode_prompt(prompt=list(prompts), prompt_2=None, device=self.device,
                                                    max_sequence_length=self.max_sequence_length)
        return torch.cat([embeds.flatten(1), pooled], 1).to(self.dtype)

    def _forward(self, x_t, t, cond):
        n, c, h, w = x_t.shape
        embeds, pooled = self.unpack_condition(cond)
        guidance = None
        if self.transformer.config.guidance_embeds:
            guidance = torch.full((n,), self.guidance_scale, device=x_t.device, dtype=torch.float32)
        velocity = self.transformer(
            hidden_states=self.pipe._pack_latents(x_t, n, c, h, w),
            timestep=self._model_t_device[t].to(x_t.dtype) / 1000,  # sigma, as the pipeline passes it
            guidance=guidance, pooled_projections=pooled, encoder_hidden_states=embeds, txt_ids=self.txt_ids,
            img_ids=self.img_ids).sample
        return self.pipe._unpack_latents(velocity, h * self.vae_scale_factor, w * self.vae_scale_factor,
                                         self.vae_scale_factor)

    def describe(self) -> dict:
        guidance = self.guidance_scale if self.transformer.config.guidance_embeds else None
        return {**super().describe(), "dynamic_shifting": bool(self.scheduler.config.get("use_dynamic_shifting")),
                "guidance_scale": guidance, "max_sequence_length": self.max_sequence_length}
