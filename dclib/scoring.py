"""The scoring engine: batched denoiser calls -> error matrix [n_conditionings, n_samples].

Every conditioning is scored on the same samples (t, eps): the paper's paired comparison (Section 4.1). The
(conditioning x sample) pairs are flattened and evaluated in batches of ``batch_size``; each sample's x_t is
built once and shared by all conditionings.
"""
from __future__ import annotations

import math

from dataclasses import asdict, dataclass

import torch
from tqdm import tqdm

from .adapters.base import DiffusionAdapter
from .errors import InputError, check_finite
from .noise import NoiseDistribution, make_noise
from .objectives import OBJECTIVES, GaussianPosterior, check_loss, elbo_weights, loss_terms
from .plan import Plan


@dataclass(frozen=True)
class ScoreOptions:
    """What is measured for each (conditioning, sample) pair.

    - ``loss``: ``l2`` (squared error, the paper's default), ``l1`` or ``huber`` (Tables 8-9), averaged over
      elements as in the official code. Between the model's training target and its prediction (the adapter's
      ``target``): eps for eps-prediction models (the paper), v for v-prediction models, the velocity eps - x0
      for flow-matching models.
    - ``objective``: ``uniform`` (w_t = 1, Algorithm 1), ``elbo`` (the exact ELBO weights w_t of eq. 3 times the
      squared eps error), ``vlb`` (the variational bound in bits per dimension, with the model's learned
      variance, DiT, or its scheduler's fixed one) or ``uniform+vlb`` (Table 5).
    - ``guidance``: classifier-free guidance weight w; eps~ = (1 + w) eps(x_t, c) - w eps(x_t) (Fig. 8), on the
      model's output (v, or the velocity for flow-matching models: the same combination, as x_t is shared).
    - ``crop``: latent pixels removed from each edge of the error map before averaging (Fig. 9, eq. 11).
    """

    loss: str = "l2"
    objective: str = "uniform"
    guidance: float = 0.0
    crop: int = 0

    def __post_init__(self):
        check_loss(self.loss)
        if self.objective not in OBJECTIVES:
            raise InputError(f"unknown objective {self.objective!r}: use one of {', '.join(OBJECTIVES)}")
        check_finite("guidance", self.guidance)  # NaN would silently turn every error into NaN
        crop = check_finite("crop", self.crop)
        if crop != int(crop) or crop < 0:
            raise InputError(f"crop must be an integer >= 0, got {self.crop!r}")
        if self.objective != "uniform" and self.loss != "l2":
            raise InputError(f"the {self.objective!r} objective is defined for the l2 loss only")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class ScoreResult:
    errors: torch.Tensor  # [n_conditionings, n_samples], float32 on the CPU
    maps: torch.Tensor | None = None  # [n_conditionings, n_samples, H, W] (channel mean), when asked for
    evaluations: int = 0  # denoiser calls, including the unconditional ones for guidance
    #: {options: errors} for every variant scored from the same predictions (the scorer's own first), when asked for
    by_options: dict[ScoreOptions, torch.Tensor] | None = None


def crop_map(x: torch.Tensor, crop: int) -> torch.Tensor:
    if crop == 0:
        return x
    if 2 * crop >= min(x.shape[-2:]):
        raise InputError(f"crop {crop} removes the whole {tuple(x.shape[-2:])} error map")
    return x[..., crop:-crop, crop:-crop]


#: CPU batch size for ``batch_size="auto"``: CPU throughput stops growing well before this many pairs
#: (benchmarks/throughput.py), and larger batches slow attention layers down.
AUTO_CPU_BATCH = 256


def batch_from_memory(free_bytes: float, per_pair_bytes: float, cap: int = 1024, fraction: float = 0.8,
                      multiple: int = 8) -> int:
    """The largest batch (a multiple of ``multiple``, at most ``cap``) whose activations fit ``fraction`` of the
    free memory, at ``per_pair_bytes`` per (conditioning, sample) pair; at least 1."""
    fits = int(fraction * free_bytes / max(per_pair_bytes, 1.0))
    if fits >= multiple:
        fits -= fits % multiple
    return max(1, min(cap, fits))


def balanced_batch(total: int, cap: int, multiple: int = 8) -> int:
    """The batch size that splits ``total`` rows into as few calls of at most ``cap`` as possible, all of one
    size (a multiple of ``multiple``, at most ``cap``): the static shape of a compiled denoiser. 600 pairs at
    cap 256 run as 3 x 200, not 256 + 256 + 88 padded to 256 (22% of the work thrown away)."""
    if total <= 0:
        return cap
    calls = -(-total // cap)
    size = -(-total // calls)
    return min(cap, -(-size // multiple) * multiple)


def auto_batch_size(adapter: DiffusionAdapter, cap: int = 1024) -> int:
    """A batch size from the accelerator's free memory, measured once per adapter with a 4-pair probe.

    On CUDA: peak memory of one denoiser call on 4 pairs -> bytes per pair -> :func:`batch_from_memory`. On
    CPU: :data:`AUTO_CPU_BATCH` (memory is rarely the limit there; speed is flat beyond it).
    """
    if adapter.device.type != "cuda":
        return AUTO_CPU_BATCH
    cached = getattr(adapter, "_auto_batch_size", None)
    if cached:
        return cached
    probe = 4
    cond = adapter.encode_conditions(["" if adapter.text_conditioned else 0])
    x_t = torch.zeros(probe, *adapter.sample_shape, device=adapter.device)
    t = torch.full((probe,), adapter.num_train_timesteps // 2, device=adapter.device, dtype=torch.long)
    torch.cuda.synchronize(adapter.device)
    torch.cuda.reset_peak_memory_stats(adapter.device)
    base = torch.cuda.memory_allocated(adapter.device)
    adapter.model_output(x_t, t, cond.expand(probe, *cond.shape[1:]))
    torch.cuda.synchronize(adapter.device)
    per_pair = (torch.cuda.max_memory_allocated(adapter.device) - base) / probe
    free, _ = torch.cuda.mem_get_info(adapter.device)
    adapter._auto_batch_size = batch_from_memory(free, per_pair, cap)
    return adapter._auto_batch_size


def resolve_batch_size(adapter: DiffusionAdapter, batch_size: "int | str") -> int:
    """Denoiser inputs per call: ``batch_size`` itself, or for "auto" :func:`auto_batch_size`; anything else but a
    positive integer is an error. The one place "auto" becomes a number."""
    if batch_size == "auto":
        batch_size = auto_batch_size(adapter)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InputError(f"batch_size must be a positive integer or 'auto', got {batch_size!r}")
    return batch_size


class Scorer:
    """Scores one clean sample x0 against many conditionings on a shared set of (t, eps) samples."""

    def __init__(self, adapter: DiffusionAdapter, options: ScoreOptions | None = None,
                 batch_size: "int | str" = "auto", progress: "bool | tqdm" = False):
        self.adapter = adapter
        self.options = options or ScoreOptions()
        self.batch_size = resolve_batch_size(adapter, batch_size)
        self.progress = progress
        if getattr(adapter, "compiled", False):
            adapter.static_batch = batch_size  # the compiled graph's static shape; score() balances it per workload
        self._posterior = self._elbo_w = None
        self._check_objective(self.options)

    def _check_objective(self, options: ScoreOptions) -> None:
        if options.objective == "uniform" or self._posterior is not None:
            return
        if self.adapter.flow_matching:
            # elbo weights and the vlb come from a discrete DDPM schedule (betas), which flow matching has not
            raise InputError(f"the {options.objective!r} objective is not defined for flow-matching models "
                             f"({type(self.adapter).__name__}); use objective='uniform'")
        # the variance of p(x_{t-1} | x_t): the model's learned one, else its scheduler's fixed one
        variance_type = self.adapter.variance_type
        self._posterior = GaussianPosterior(self.adapter.betas, variance_type)
        self._elbo_w = elbo_weights(self.adapter.betas, variance_type).float()

    def _terms(self, o: ScoreOptions, x0, x_t, t, eps, target, pred, var_values) -> torch.Tensor:
        if o.objective == "uniform":
            return loss_terms(target, pred, o.loss)
        eps_pred = self.adapter.to_eps(pred, x_t, t)  # the ELBO and the VLB are written in eps
        if o.objective == "elbo":
            w = self._elbo_w.to(x0.device)[t].view(-1, *([1] * (x0.dim() - 1)))
            return w * loss_terms(eps, eps_pred, "l2")
        vlb = self._posterior.vlb_terms(x0, x_t, t, eps_pred, var_values)
        return vlb if o.objective == "vlb" else vlb + loss_terms(target, pred, "l2")

    @torch.inference_mode()
    def score_plan(self, x0: torch.Tensor, conditions: torch.Tensor, plan: Plan, seed: int, image_id: str | int,
                   noise: str | NoiseDistribution | None = None, shared_noise: bool = True,
                   **kwargs) -> ScoreResult:
        """:meth:`score` on a plan's samples, with the noise keyed by (seed, image id, t, repeat) as everywhere in
        dclib (:func:`dclib.noise.make_noise`): the glue between plan and score. ``shared_noise=False`` (an
        ablation: the paper shares it) gives conditioning c its own noise, keyed by image id ``"{image_id}|cond{c}"``,
        scored in the same batched calls."""
        if shared_noise:
            eps = make_noise(plan, x0.shape, seed, image_id, noise)
        else:
            eps = torch.stack([make_noise(plan, x0.shape, seed, f"{image_id}|cond{c}", noise)
                               for c in range(len(conditions))])
        return self.score(x0, conditions, torch.tensor(plan.timesteps), eps, **kwargs)

    def score(self, x0: torch.Tensor, conditions: torch.Tensor, timesteps: torch.Tensor, noise: torch.Tensor,
              return_maps: bool = False, variants: tuple[ScoreOptions, ...] = ()) -> ScoreResult:
        """Errors of every conditioning on every sample.

        Args:
            x0: one clean sample [C, H, W] (a latent for latent models).
            conditions: encoded conditionings [n_cond, ...] (``adapter.encode_conditions``).
            timesteps: integer timesteps [n_samples] in [0, T).
            noise: eps [n_samples, C, H, W], one per timestep, shared by every conditioning; or
                [n_conditionings, n_samples, C, H, W], each conditioning its own (the unshared ablation).
            variants: further :class:`ScoreOptions` (another loss, objective, guidance weight or crop) measured on
                the same denoiser outputs, returned in ``by_options`` beside the scorer's own: a comparison of
                them paired down to the denoiser's output, for the price of one pass (plus one unconditional pass
                if any uses guidance). Each equals what a scorer with those options alone computes.
        """
        variants = tuple(dict.fromkeys((self.options, *variants))) if variants else ()
        for v in variants:
            if not isinstance(v, ScoreOptions):
                raise InputError(f"a scoring variant is a ScoreOptions, not {v!r}")
            self._check_objective(v)
        adapter, device = self.adapter, self.adapter.device
        timesteps = torch.as_tensor(timesteps, dtype=torch.long)
        n_cond, n_samples = len(conditions), len(timesteps)
        # Unshared noise: one x_t row per (conditioning, sample) pair, in the pairs' own flattened order.
        per_condition = noise.dim() == x0.dim() + 2
        lead = (n_cond, n_samples) if per_condition else (n_samples,)
        if tuple(noise.shape) != (*lead, *x0.shape):
            dims = ", ".join(map(str, (*lead, *x0.shape)))
            raise InputError(f"noise must have shape [{dims}], got {list(noise.shape)}")
        if n_samples and (timesteps.min() < 0 or timesteps.max() >= adapter.num_train_timesteps):
            raise InputError(f"timesteps must lie in [0, {adapter.num_train_timesteps})")
        x0 = x0.to(device, torch.float32)
        t_all = timesteps.to(device).repeat(n_cond if per_condition else 1)
        eps_all = noise.to(device, torch.float32).reshape(-1, *x0.shape)
        n_rows = len(t_all)
        xt_all = adapter.q_sample(x0.expand(n_rows, *x0.shape), eps_all, t_all)
        target_all = adapter.target(x0.expand(n_rows, *x0.shape), eps_all, t_all)  # eps, v, x0 or eps - x0
        errors = torch.empty(n_cond, n_samples)
        others = {v: torch.empty(n_cond, n_samples) for v in variants[1:]}
        maps = None
        evaluations = 0

        compiled = getattr(adapter, "compiled", False)
        pred_uncond = None
        if any(v.guidance != 0 for v in (self.options, *variants)) and n_rows:  # once for every guidance weight
            null = adapter.null_condition()
            pred_uncond = torch.empty_like(xt_all)
            step = self.batch_size
            if compiled:
                step = adapter.static_batch = balanced_batch(n_rows, self.batch_size)
            for start in range(0, n_rows, step):
                sl = slice(start, start + step)
                size = len(t_all[sl])
                pred_uncond[sl] = adapter.model_output(xt_all[sl], t_all[sl], null.expand(size, *null.shape[1:]))[0]
                evaluations += size

        total = n_cond * n_samples
        # ``progress`` may be a caller's bar spanning several calls (one per adaptive stage).
        own_bar = not isinstance(self.progress, tqdm)
        bar = tqdm(total=total, desc="scoring", unit="eval", disable=not self.progress or total == 0,
                   leave=False) if own_bar else self.progress
        step = self.batch_size
        if compiled:  # one static shape per workload, with as little padding as the call count allows
            step = adapter.static_batch = balanced_batch(total, self.batch_size)
        for start in range(0, total, step):
            pair = torch.arange(start, min(start + step, total))
            c_idx, s_idx = pair // n_samples, pair % n_samples
            s_dev = (pair if per_condition else s_idx).to(device)  # the x_t row of each pair
            x_t, t, target = xt_all[s_dev], t_all[s_dev], target_all[s_dev]
            pred_c, var_values = adapter.model_output(x_t, t, conditions[c_idx.to(conditions.device)])

            def measured(o: ScoreOptions) -> torch.Tensor:  # error maps under one variant's options
                w = o.guidance
                pred = pred_c if w == 0 else (1 + w) * pred_c - w * pred_uncond[s_dev]
                return crop_map(self._terms(o, x0.expand_as(x_t), x_t, t, eps_all[s_dev], target, pred, var_values),
                                o.crop)

            terms = measured(self.options)
            errors[c_idx, s_idx] = terms.flatten(1).mean(1).float().cpu()
            for o, out in others.items():
                out[c_idx, s_idx] = measured(o).flatten(1).mean(1).float().cpu()
            if return_maps:
                if maps is None:
                    maps = torch.empty(n_cond, n_samples, *terms.shape[-2:])
                maps[c_idx, s_idx] = terms.mean(1).float().cpu()
            evaluations += len(pair)
            bar.update(len(pair))
        if own_bar:
            bar.close()
        return ScoreResult(errors, maps, evaluations, {self.options: errors, **others} if variants else None)


def noise_elements(source, crop: int = 0) -> int:
    """``d``: how many elements each error averages over, which converts dclib's per-element temperature into the
    paper's (see :mod:`dclib.calibration`). ``source`` is an adapter, a :class:`~dclib.DiffusionClassifier` or the
    shape of one sample (e.g. ``(4, 64, 64)``); ``crop`` is :class:`~dclib.scoring.ScoreOptions`' ``crop``,
    which averages over the error map without ``crop`` pixels at each edge."""
    adapter = getattr(source, "adapter", source)
    shape = tuple(int(v) for v in getattr(adapter, "sample_shape", source))
    if len(shape) < 2 or min(shape) < 1:
        raise InputError(f"a sample shape needs at least two positive dimensions; got {shape}")
    if crop:  # the engine crops the last two (spatial) dimensions of the error map before averaging
        height, width = shape[-2] - 2 * crop, shape[-1] - 2 * crop
        if min(height, width) < 1:
            raise InputError(f"crop {crop} removes the whole {shape[-2:]} error map")
        shape = shape[:-2] + (height, width)
    return math.prod(shape)
