"""Flow-matching (rectified flow) models: Stable Diffusion 3 / 3.5 (``StableDiffusion3Pipeline``).

These models noise as x_t = (1 - sigma) x0 + sigma eps and are trained to predict the velocity v = eps - x0
(Esser et al. 2024), so dclib scores loss(eps - x0, v_theta(x_t, c)), the quantity they were trained on, with
the same shared (t, eps) samples as for diffusion models: the rule of every adapter (eps-, v- and
sample-prediction diffusion models too, ``DiffusionAdapter.target``).

dclib's integer timesteps t in [0, T) (more noise as t grows) index the scheduler's training grid: the
``FlowMatchEulerDiscreteScheduler`` of the checkpoint holds T sigmas for s = 1/T, 2/T, ..., 1 (in decreasing
order), sigma = shift s / (1 + (shift - 1) s), and the transformer takes ``timestep = sigma * T``. So t is
s = (t + 1) / T: t = T - 1 is pure noise, and the evenly spaced plans cover the grid the model was trained on.
"""
from __future__ import annotations

from typing import Sequence

import torch

from ..errors import InputError
from .base import DiffusionAdapter, VAELatents, place


def flow_sigmas(scheduler, image_seq_len: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(sigmas, transformer timesteps) for t = 0 .. T-1 in increasing noise, float32, from the model's scheduler.

    A fresh copy of the scheduler is built from its config, so a pipeline that already sampled (which calls
    ``set_timesteps``) gives the same table. With ``use_dynamic_shifting`` the shift depends on the image's
    token count, as in the pipeline's ``calculate_shift``.
    """
    fresh = type(scheduler).from_config(scheduler.config)
    cfg = fresh.config
    if cfg.get("use_dynamic_shifting"):
        if image_seq_len is None:
            raise InputError("this scheduler shifts sigmas by resolution: pass the image's token count")
        from diffusers.pipelines.stable_diffusion_3.pipeline_stable_diffusion_3 import calculate_shift

        mu = calculate_shift(image_seq_len, cfg.get("base_image_seq_len", 256), cfg.get("max_image_seq_len", 4096),
                             cfg.get("base_shift", 0.5), cfg.get("max_shift", 1.16))
        fresh.set_timesteps(sigmas=fresh.sigmas.numpy(), mu=mu)  # the unshifted grid s -> time_shift(mu, s)
        sigmas, timesteps = fresh.sigmas[:-1], fresh.timesteps  # drop the appended terminal sigma 0
    else:
        # the scheduler's construction-time tables are exactly what its training scripts index into
        sigmas, timesteps = fresh.sigmas, fresh.timesteps
    return sigmas.float().flip(0), timesteps.float().flip(0)


class FlowMatchingAdapter(DiffusionAdapter):
    """Shared flow-matching mechanics; subclasses call ``_set_sigmas`` once their latent shape is known."""

    flow_matching = True
    prediction_type = "flow_prediction"  # diffusers' name for a velocity output

    def _set_noise_schedule(self, scheduler) -> None:
        # no betas / abar: the uniform objective is the only one defined (the scorer refuses elbo and vlb)
        self.betas = self.alphas_cumprod = None

    def _set_sigmas(self, image_seq_len: int | None = None) -> None:
        self.sigmas, self.model_timesteps = flow_sigmas(self.scheduler, image_seq_len)
        self._sigmas_device = self.sigmas.to(self.device)
        self._model_t_device = self.model_timesteps.to(self.device)

    def q_sample(self, x0: torch.Tensor, eps: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x_t = (1 - sigma_t) x0 + sigma_t eps (``scheduler.scale_noise``)."""
        sigma = self._sigmas_device[t].view(-1, *([1] * (x0.dim() - 1)))
        return sigma * eps + (1.0 - sigma) * x0

    def target(self, x0: torch.Tensor, eps: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The velocity d x_t / d sigma = eps - x0, the flow-matching training target."""
        return eps - x0

    def to_eps(self, model_output: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """An eps estimate from a velocity: x_t = eps - (1 - sigma) v, so eps = x_t + (1 - sigma) v."""
        sigma = self._sigmas_device[t].view(-1, *([1] * (x_t.dim() - 1)))
        return x_t + (1.0 - sigma) * model_output

    def describe(self) -> dict:
        return {**super().describe(), "flow_matching": True, "shift": self.scheduler.config.get("shift"),
                "sigma_range": [float(self.sigmas[0]), float(self.sigmas[-1])]}


class PromptFlowAdapter(VAELatents, FlowMatchingAdapter):
    """A flow-matching transformer on VAE latents that reads a prompt as token embeddings plus one pooled
    embedding (SD3 and FLUX). A prompt's conditioning is one row: the token embeddings [L, D] flattened, then
    the pooled embedding [P]. One tensor per prompt lets the engine cache, index and expand conditionings as for
    every other family."""

    text_conditioned = True
    #: Prompts per text-encoder call (T5-XXL on hundreds of prompts at once would need a lot of memory).
    encode_batch_size = 32

    def __init__(self, pipe, device="cpu", dtype=torch.float32):
        super().__init__(pipe.scheduler, device, dtype)
        self.pipe = pipe  # for encode_prompt (and FLUX's packing helpers): the pipeline's own
        self.transformer = pipe.transformer
        self.pooled_dim = self.transformer.config.pooled_projection_dim
        self.text_dim = self.transformer.config.joint_attention_dim

    def _place_modules(self, *text_encoders) -> None:
        for module in (self.transformer, self.vae, *text_encoders):
            if module is not None:
                place(module, self.device, self.dtype)

    def unpack_condition(self, cond: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Rows of ``encode_conditions`` -> (token embeds [B, L, D], pooled embeds [B, P])."""
        return cond[:, :-self.pooled_dim].unflatten(1, (-1, self.text_dim)), cond[:, -self.pooled_dim:]

    def null_condition(self):
        return self.encode_conditions([""])  # the empty prompt: the pipeline's negative prompt for guidance


class StableDiffusion3Adapter(PromptFlowAdapter):
    """SD3 / SD3.5: MMDiT transformer on VAE latents, prompts through CLIP-L, CLIP-G (pooled) and optional T5."""

    #: T5 tokens per prompt, the pipeline's default (zeros when the pipeline has no T5 encoder).
    max_sequence_length = 256

    def __init__(self, pipe, device="cpu", dtype=torch.float32, resolution: int | None = None,
                 id2label: dict | None = None):
        super().__init__(pipe, device, dtype)
        cfg = self.transformer.config
        self._set_vae(pipe.vae, cfg.sample_size, resolution)  # x0 = (mean - shift_factor) * scaling_factor
        self.latent_channels = cfg.in_channels
        self.patch_size = cfg.patch_size
        if self.resolution % (self.vae_scale_factor * self.patch_size):
            raise InputError(f"resolution {self.resolution} must be a multiple of "
                             f"{self.vae_scale_factor * self.patch_size} (VAE factor x patch size)")
        self._place_modules(pipe.text_encoder, pipe.text_encoder_2, pipe.text_encoder_3)
        side = self.resolution // self.vae_scale_factor
        self._set_sigmas(image_seq_len=(side // self.patch_size) ** 2)

    @torch.inference_mode()
    def _encode_conditions(self, prompts: Sequence[str]) -> torch.Tensor:
        embeds, _, pooled, _ = self.pipe.encode_prompt(
            prompt=list(prompts), prompt_2=None, prompt_3=None, device=self.device, do_classifier_free_guidance=False,
            max_sequence_length=self.max_sequence_length)
        return torch.cat([embeds.flatten(1), pooled], 1).to(self.dtype)

    def _forward(self, x_t, t, cond):
        embeds, pooled = self.unpack_condition(cond)
        return self.transformer(hidden_states=x_t, timestep=self._model_t_device[t], encoder_hidden_states=embeds,
                                pooled_projections=pooled).sample
