"""The one small interface every model family implements for the scoring engine.

An adapter turns images into the clean sample x0 the diffusion model works on, turns conditionings into the
model's conditioning tensors (computed once and cached), noises x0 to x_t, and predicts, for a batch of
(x_t, t, cond), the quantity the error is measured on: the model's own output, scored against the target it
was trained on (``target``): eps for eps-prediction models (the paper's case), v for v-prediction models, x0
for sample-prediction models, the velocity eps - x0 for flow-matching models. The noise schedule always comes
from the model's own scheduler (``alphas_cumprod``, or the flow-matching sigmas).
"""
from __future__ import annotations

from contextlib import nullcontext
from typing import Any, Sequence

import torch

from ..errors import InputError
from ..images import ImageInput, preprocess
from .cpu_threads import map_rows


#: torch.compile modes accepted by ``DiffusionAdapter.compile`` (``--compile-mode MODE`` on the command line).
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
#: The modes under which inductor captures CUDA graphs on a GPU.
CUDA_GRAPH_MODES = ("reduce-overhead", "max-autotune")


def check_compile_mode(mode) -> str:
    """``compile=`` as given (True/None: "default") -> one of ``COMPILE_MODES``, or a clear error."""
    mode = "default" if mode in (None, True) else mode
    if mode not in COMPILE_MODES:
        raise InputError(f"unknown compile mode {mode!r}: use one of {', '.join(COMPILE_MODES)}")
    return mode


VARIANCE_TYPES = ("fixed_small", "fixed_large", "learned_range")


def model_variance_type(scheduler_variance_type: str | None, learned_variance: bool) -> str:
    """Which variance p(x_{t-1} | x_t) has: one of :data:`VARIANCE_TYPES`.

    A model that outputs its variance (twice the input channels) is ``learned_range``, the parameterisation
    improved DDPM and DiT train that output with, even when its pipeline ships a scheduler with a fixed variance
    (DiTPipeline drops the variance half and samples with the scheduler's). Otherwise it is the scheduler's own
    fixed choice; diffusers' ``*_log`` variants are the same variances written differently.
    """
    if learned_variance:
        if scheduler_variance_type == "learned":
            # diffusers reads this output as the variance itself, improved DDPM as its log: ambiguous
            raise InputError("variance_type 'learned' is not supported; dclib scores learned variances as "
                             "'learned_range' (improved DDPM / DiT)")
        return "learned_range"
    kind = scheduler_variance_type or "fixed_small"  # DDPMScheduler's default; PNDM and DDIM have no such key
    kind = {"fixed_small_log": "fixed_small", "fixed_large_log": "fixed_large"}.get(kind, kind)
    if kind not in ("fixed_small", "fixed_large"):
        raise InputError(f"the scheduler's variance_type {kind!r} needs a model that predicts its variance, "
                         "but this model outputs as many channels as it takes")
    return kind


class DiffusionAdapter:
    """Base class. Subclasses set the attributes below and implement ``_encode`` and ``_forward``."""

    #: What the denoiser outputs, diffusers' names: "epsilon", "v_prediction" or "sample" (x0).
    prediction_type: str = "epsilon"
    #: True for flow-matching models (x_t = (1 - sigma) x0 + sigma eps, velocity target; no betas).
    flow_matching: bool = False
    #: True when the model also predicts its variance (learned sigma), needed by the VLB objective.
    learned_variance: bool = False
    #: Pixel resolution and channels the model's images are prepared at.
    resolution: int
    image_channels: int = 3
    #: Conditionings per ``_encode_conditions`` call (None: all at once). Text models set it so that peak
    #: memory stays that of one chunk of prompts however many classes there are.
    encode_batch_size: int | None = None
    #: Names of the classes for class-conditional models (None for free-text models).
    class_names: list[str] | None = None
    #: Whether conditionings are free text (True) or class indices (False).
    text_conditioned: bool = False

    def __init__(self, scheduler, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32):
        self.scheduler = scheduler
        self.device = torch.device(device)
        self.dtype = dtype
        self.num_train_timesteps = int(scheduler.config.num_train_timesteps)
        self._set_noise_schedule(scheduler)
        self._cond_cache: dict[Any, torch.Tensor] = {}
        self.model_id: str | None = None
        #: The LoRA loaded on top of the model (its identity, see ``lora.load_lora``), or None.
        self.lora: dict | None = None
        #: Mixed precision for the denoiser only (e.g. torch.bfloat16 on CPU); errors stay float32.
        self.autocast: torch.dtype | None = None
        #: With ``compile()``: every denoiser call is padded to this many rows (one static shape, one graph).
        self.static_batch: int | None = None
        #: The ``torch.compile`` mode once compiled ("default", "reduce-overhead", ...); None when eager.
        self.compile_mode: str | None = None
        self._cuda_graphs = False
        #: Most CPU worker threads per denoiser call, each running its own rows with a share of torch's
        #: intra-op threads (None: one per intra-op thread; 1: the batch in one call). See ``cpu_threads``.
        self.cpu_workers: int | None = None

    def compile(self, mode: str | None = None, backend: str = "inductor") -> "DiffusionAdapter":
        """``torch.compile`` the denoiser call for long runs (minutes of compilation, then faster calls).

        ``mode`` is torch.compile's: "default" (or None), "reduce-overhead" (CUDA graphs on a GPU: one replay
        per call instead of a kernel launch per op), "max-autotune" (also searches GEMM/conv kernels; CUDA
        graphs too) or "max-autotune-no-cudagraphs". Batches are padded to one static size per workload
        (``scoring.balanced_batch``: the fewest calls of at most the scorer's batch size, all alike), so a
        smaller last batch does not trigger a recompilation, and a CUDA graph is captured once per workload
        size. Errors agree with the eager model to float tolerance, not bitwise. On CPU a compiled graph runs
        on torch's intra-op threads, not on the row-parallel workers of eager calls.
        """
        mode = check_compile_mode(mode)
        if not self.compiled:
            self._forward = torch.compile(self._forward, mode=None if mode == "default" else mode, backend=backend,
                                          dynamic=False)
            self.compile_mode = mode
            self._cuda_graphs = self.device.type == "cuda" and mode in CUDA_GRAPH_MODES
        return self

    @property
    def compiled(self) -> bool:
        return self.compile_mode is not None

    def _set_noise_schedule(self, scheduler) -> None:
        """DDPM-type schedule: betas and abar from the scheduler (flow-matching adapters override this)."""
        self.betas = torch.as_tensor(scheduler.betas, dtype=torch.float64)
        # The same float32 values as scheduler.alphas_cumprod, i.e. what scheduler.add_noise uses.
        self.alphas_cumprod = torch.as_tensor(scheduler.alphas_cumprod, dtype=torch.float32)
        self._abar_device = self.alphas_cumprod.to(self.device)

    # --------------------------------------------------------------------------- images -> x0
    def preprocess(self, image: ImageInput) -> torch.Tensor:
        """One image -> pixels [C, R, R] in [-1, 1], as the paper prepares them."""
        return preprocess(image, self.resolution, self.image_channels)

    @torch.inference_mode()
    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        """Pixels [B, C, R, R] in [-1, 1] -> clean samples x0 [B, ...] (float32) for the diffusion model."""
        return self._encode(pixels.to(self.device)).float()

    def _encode(self, pixels: torch.Tensor) -> torch.Tensor:
        return pixels  # pixel-space models

    @torch.inference_mode()
    def decode(self, x0: torch.Tensor) -> torch.Tensor:
        """Clean samples [B, ...] -> pixels [B, C, R, R] in [-1, 1] (identity for pixel-space models)."""
        vae = getattr(self, "vae", None)
        if vae is None:
            return x0.float()
        shift = getattr(vae.config, "shift_factor", None) or 0.0
        return vae.decode((x0 / vae.config.scaling_factor + shift).to(vae.dtype)).sample.float()

    # --------------------------------------------------------------------------- conditionings
    def encode_conditions(self, conditions: Sequence) -> torch.Tensor:
        """Conditionings (prompts or class indices) -> a tensor whose rows the model takes; cached."""
        missing = [c for c in dict.fromkeys(conditions) if c not in self._cond_cache]
        step = self.encode_batch_size or max(len(missing), 1)
        for start in range(0, len(missing), step):
            chunk = missing[start:start + step]
            for c, row in zip(chunk, self._encode_conditions(chunk)):
                self._cond_cache[c] = row
        return torch.stack([self._cond_cache[c] for c in conditions])

    def _encode_conditions(self, conditions: Sequence) -> torch.Tensor:
        raise NotImplementedError

    def null_condition(self) -> torch.Tensor:
        """The unconditional input (empty prompt or null class) used by classifier-free guidance: [1, ...]."""
        raise InputError(f"{type(self).__name__} has no unconditional input, so guidance is unavailable")

    # --------------------------------------------------------------------------- denoiser
    def q_sample(self, x0: torch.Tensor, eps: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps, with the scheduler's own abar."""
        abar = self._abar_device[t].view(-1, *([1] * (x0.dim() - 1)))
        return abar.sqrt() * x0 + (1 - abar).sqrt() * eps

    def target(self, x0: torch.Tensor, eps: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """What ``model_output`` is scored against: the model's training target for its ``prediction_type``.

        The paper's eps for eps-prediction models. A v-prediction model is scored on v = sqrt(abar) eps -
        sqrt(1 - abar) x0 (diffusers' ``get_velocity``) and a sample-prediction model on x0: the space each was
        trained in, as flow-matching models are scored on their velocity. The paper keeps the weighting used at
        training time (w_t = 1, Sec. 3.1) because deviating from it hurts accuracy; an eps error would reweight a
        v-model's timesteps by abar_t (eps - eps^ = sqrt(abar_t) (v - v^)). Within one (t, eps) every
        conditioning is scaled alike, so only the weighting across timesteps differs. The ``elbo`` and ``vlb``
        objectives are written in eps and convert the output with ``to_eps``.
        """
        if self.prediction_type == "epsilon":
            return eps
        abar = self._abar_device[t].view(-1, *([1] * (x0.dim() - 1)))
        if self.prediction_type == "v_prediction":
            return abar.sqrt() * eps - (1 - abar).sqrt() * x0
        if self.prediction_type == "sample":
            return x0
        raise InputError(f"unsupported prediction type {self.prediction_type!r}")

    @property
    def variance_type(self) -> str:
        """The variance of p(x_{t-1} | x_t) used by the ``elbo`` and ``vlb`` objectives: ``learned_range`` for a
        model that predicts it, else the scheduler's fixed choice (``model_variance_type``)."""
        return model_variance_type(getattr(self.scheduler.config, "variance_type", None), self.learned_variance)

    @torch.inference_mode()
    def predict(self, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """An eps estimate (float32), whatever the model's parameterisation, and, for learned-variance models, the
        raw variance output, for a batch: what DDIM-type samplers (``interpret``) step with."""
        out, var_values = self.model_output(x_t, t, cond)
        return self.to_eps(out, x_t, t), var_values

    @torch.inference_mode()
    def model_output(self, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor
                     ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The denoiser's own prediction of ``target`` (float32: eps, v, x0 or a velocity) and, for
        learned-variance models, the raw variance output (the second half of the channels), for a batch."""
        n = len(x_t)
        if self.static_batch and n < self.static_batch:
            # repeat the last row: the padded rows are computed and dropped
            pad = lambda v: torch.cat([v, v[-1:].expand(self.static_batch - n, *v.shape[1:])])
            x_t, t, cond = pad(x_t), pad(t), pad(cond)
        if self.device.type == "cpu" and not self.compiled:
            # one slice of rows per core (see cpu_threads); a compiled graph parallelises inside its own kernels
            out = map_rows(self._forward, (x_t.to(self.dtype), t, cond), self.cpu_workers, self.autocast)
        else:
            mixed = nullcontext() if self.autocast is None else torch.autocast(self.device.type, dtype=self.autocast)
            if self._cuda_graphs:
                torch.compiler.cudagraph_mark_step_begin()  # a new step: the last replay's buffers may be reused
            with mixed:
                out = self._forward(x_t.to(self.dtype), t, cond).float()
            if self._cuda_graphs:
                out = out.clone()  # the graph's output buffer is overwritten by the next replay
        out, x_t, t = out[:n], x_t[:n], t[:n]
        channels = x_t.shape[1]
        var_values = None
        if self.learned_variance:
            out, var_values = out[:, :channels], out[:, channels:]
        return out, var_values

    def to_eps(self, model_output: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Convert the model's native prediction to an eps estimate."""
        if self.prediction_type == "epsilon":
            return model_output
        abar = self._abar_device[t].view(-1, *([1] * (x_t.dim() - 1)))
        if self.prediction_type == "v_prediction":
            # v = sqrt(abar) eps - sqrt(1-abar) x0 and x_t = sqrt(abar) x0 + sqrt(1-abar) eps
            return abar.sqrt() * model_output + (1 - abar).sqrt() * x_t
        if self.prediction_type == "sample":
            return (x_t - abar.sqrt() * model_output) / (1 - abar).sqrt()
        raise InputError(f"unsupported prediction type {self.prediction_type!r}")

    def _forward(self, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    # --------------------------------------------------------------------------- info
    @property
    def sample_shape(self) -> tuple[int, ...]:
        """Shape of one x0 (e.g. (4, 64, 64) for SD 2 base at 512 px)."""
        raise NotImplementedError

    def describe(self) -> dict:
        return {
            "adapter": type(self).__name__,
            "model": self.model_id,
            "lora": self.lora,
            "prediction_type": self.prediction_type,
            "learned_variance": self.learned_variance,
            "num_train_timesteps": self.num_train_timesteps,
            "resolution": self.resolution,
            "sample_shape": list(self.sample_shape),
            "dtype": str(self.dtype).replace("torch.", ""),
            "device": str(self.device),
        }


class VAELatents:
    """For adapters whose denoiser works on VAE latents (SD, DiT, SD3): x0 is the VAE's scaled mean latent."""

    vae: Any
    latent_channels: int

    def _set_vae(self, vae, latent_side: int, resolution: int | None) -> None:
        """The VAE, its downsampling factor and the pixel resolution (default: the denoiser's native latent
        side times that factor)."""
        self.vae = vae
        self.vae_scale_factor = 2 ** (len(vae.config.block_out_channels) - 1)
        self.resolution = resolution or latent_side * self.vae_scale_factor

    @property
    def sample_shape(self):
        side = self.resolution // self.vae_scale_factor
        return (self.latent_channels, side, side)

    def _encode(self, pixels):
        return latent_from_vae(self.vae, pixels)


def class_index_tensor(labels: Sequence[int], num_classes: int, device: torch.device) -> torch.Tensor:
    """Class-conditional models' conditionings: the indices themselves, checked against the class count."""
    labels = [int(v) for v in labels]
    bad = [v for v in labels if not 0 <= v < num_classes]
    if bad:
        raise InputError(f"class indices must be in [0, {num_classes}); got {bad[:5]}")
    return torch.tensor(labels, device=device)


def latent_from_vae(vae, pixels: torch.Tensor) -> torch.Tensor:
    """x0 = (posterior mean - shift_factor) * scaling_factor, both read from the VAE config."""
    posterior = vae.encode(pixels.to(vae.dtype)).latent_dist
    shift = getattr(vae.config, "shift_factor", None) or 0.0
    return (posterior.mean - shift) * vae.config.scaling_factor


def place(module: torch.nn.Module, device: torch.device, dtype: torch.dtype) -> None:
    """Move to the device in eval mode; cast only when the weights are not already in ``dtype``."""
    module.to(device)
    if module.dtype != dtype:
        module.to(dtype)
    module.eval()


def id2label_of(pipe, id2label: dict | None = None) -> dict[int, str]:
    """Class names from model_index.json's id2label (what dclib and DiT save), else from the pipeline."""
    raw = id2label or (pipe.config.get("id2label") if hasattr(pipe, "config") else None)
    if not raw:
        labels = getattr(pipe, "labels", None) or {}  # DiTPipeline keeps {name: id}
        return {int(v): k for k, v in sorted(labels.items(), key=lambda kv: kv[1])}
    return {int(k): str(v) for k, v in dict(raw).items()}
