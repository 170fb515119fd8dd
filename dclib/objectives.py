"""Per-sample error terms: the paper's losses (Tables 8-9) and objectives (Table 5).

The losses and the variational bound map tensors [B, C, H, W] to elementwise terms [B, C, H, W]; the engine
crops them and takes the mean over elements, as the official code does
(``F.mse_loss(..., reduction="none").mean(dim=(1, 2, 3))``).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .adapters.base import VARIANCE_TYPES  # noqa: F401  (a model's variance is a fact of its adapter)
from .errors import InputError

LOSSES = ("l2", "l1", "huber")
OBJECTIVES = ("uniform", "elbo", "vlb", "uniform+vlb")


def check_loss(loss: str) -> str:
    """``loss`` itself when it is one of :data:`LOSSES`, else a clear error."""
    if loss not in LOSSES:
        raise InputError(f"unknown loss {loss!r}: use one of {', '.join(LOSSES)}")
    return loss


def loss_terms(eps: torch.Tensor, eps_pred: torch.Tensor, loss: str) -> torch.Tensor:
    """Elementwise loss between a target (eps, v, ...) and its prediction: squared error, absolute error or Huber
    (delta 1)."""
    check_loss(loss)
    if loss == "l2":
        return F.mse_loss(eps_pred, eps, reduction="none")
    if loss == "l1":
        return F.l1_loss(eps_pred, eps, reduction="none")
    return F.huber_loss(eps_pred, eps, reduction="none", delta=1.0)


#: The variances of p(x_{t-1} | x_t) dclib can score (diffusers' ``variance_type`` names).
def _schedule(betas: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(betas, alphas, abar, abar_prev) in float64, abar_prev = 1 at t = 0."""
    betas = betas.double()
    alphas = 1 - betas
    abar = torch.cumprod(alphas, 0)
    return betas, alphas, abar, torch.cat([torch.ones(1, dtype=torch.float64), abar[:-1]])


def fixed_log_variances(betas: torch.Tensor) -> dict[str, torch.Tensor]:
    """log sigma_t^2 for t = 0 .. T-1 of the two fixed choices, as improved DDPM / DiT tabulate them.

    ``fixed_small`` is the posterior variance beta~_t = (1 - abar_{t-1}) / (1 - abar_t) beta_t and
    ``fixed_large`` is beta_t: diffusers' ``DDPMScheduler._get_variance`` for t >= 1. At t = 0 beta~_0 = 0, and
    both take beta~_1 instead (improved DDPM's clipping, "to get a better decoder log likelihood"): diffusers'
    sampler adds no noise at t = 0, so its value there (1e-20, beta_0) is never used, while the VLB's decoder
    term at t = 0 needs a finite variance.
    """
    betas, _, abar, abar_prev = _schedule(betas)
    posterior = betas * (1 - abar_prev) / (1 - abar)
    return {"fixed_small": torch.cat([posterior[1:2], posterior[1:]]).log(),
            "fixed_large": torch.cat([posterior[1:2], betas[1:]]).log()}


def elbo_weights(betas: torch.Tensor, variance_type: str = "fixed_small") -> torch.Tensor:
    """w_t of the exact ELBO (paper eq. 3): beta_t^2 / (2 sigma_t^2 alpha_t (1 - abar_t)).

    sigma_t^2 is the model's fixed variance (:func:`fixed_log_variances`): beta~_t for ``fixed_small`` (the
    DDPMScheduler default; w_t = beta_t / (2 alpha_t (1 - abar_{t-1})) for t >= 1) or beta_t for
    ``fixed_large`` (w_t = beta_t / (2 alpha_t (1 - abar_t)) for t >= 1, DDPM eq. 12). A learned variance enters
    through the ``vlb`` objective only; here it counts as ``fixed_small``, the lower end of its range. The paper
    sets w_t = 1 (the "uniform" objective); Table 5 compares against this weighting.
    """
    kind = "fixed_small" if variance_type == "learned_range" else variance_type
    betas, alphas, abar, _ = _schedule(betas)
    return betas ** 2 / (2 * fixed_log_variances(betas)[kind].exp() * alphas * (1 - abar))


class GaussianPosterior:
    """q(x_{t-1} | x_t, x0), the model's p(x_{t-1} | x_t) with the variance of ``variance_type``, and the
    variational bound between them, as improved DDPM / DiT's ``gaussian_diffusion`` computes it."""

    def __init__(self, betas: torch.Tensor, variance_type: str = "learned_range"):
        if variance_type not in VARIANCE_TYPES:
            raise InputError(f"unknown variance type {variance_type!r}: use one of {', '.join(VARIANCE_TYPES)}")
        self.variance_type = variance_type
        betas, alphas, abar, abar_prev = _schedule(betas)
        self.abar = abar
        self.log_betas = betas.log()
        self.fixed_log_var = fixed_log_variances(betas)
        # q's own variance, clipped at t = 0 like DiT's posterior_log_variance_clipped
        self.post_log_var = self.fixed_log_var["fixed_small"]
        self.coef_x0 = betas * abar_prev.sqrt() / (1 - abar)
        self.coef_xt = (1 - abar_prev) * alphas.sqrt() / (1 - abar)

    def _at(self, values: torch.Tensor, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return values.to(like.device)[t].float().view(-1, *([1] * (like.dim() - 1)))

    def model_log_variance(self, t: torch.Tensor, var_values: torch.Tensor | None, like: torch.Tensor
                           ) -> torch.Tensor:
        """log sigma_t^2 of p(x_{t-1} | x_t): a fixed table, or for ``learned_range`` the model's v in [-1, 1]
        interpolating between log beta~_t (clipped at t = 0) and log beta_t: frac = (v + 1) / 2 (diffusers'
        ``_get_variance``, DiT's ``p_mean_variance``)."""
        if self.variance_type != "learned_range":
            return self._at(self.fixed_log_var[self.variance_type], t, like)
        if var_values is None:
            raise InputError("the learned_range variance needs the model's variance output (learned sigma)")
        min_log, max_log = self._at(self.post_log_var, t, like), self._at(self.log_betas, t, like)
        frac = (var_values + 1) / 2
        return frac * max_log + (1 - frac) * min_log

    def vlb_terms(self, x0, x_t, t, eps_pred, var_values=None) -> torch.Tensor:
        """Elementwise variational bound in bits, DiT's ``_vb_terms_bpd`` (no clipping of the x0 estimate).

        For t > 0 the KL(q(x_{t-1} | x_t, x0) || p(x_{t-1} | x_t)); for t = 0 the decoder's negative
        log-likelihood of x0 under a Gaussian discretized to 256 bins of width 2 / 255 on [-1, 1]. The engine
        averages the terms over elements: bits per dimension. Applied to latents (SD, DiT) the t = 0 term is the
        same formula on latents, as DiT computes it in training, although latents are neither in [-1, 1] nor
        quantised; the official DiT evaluation of Table 5 never meets it (its timesteps skip t = 0).
        """
        abar = self._at(self.abar, t, x0)
        pred_x0 = (x_t - (1 - abar).sqrt() * eps_pred) / abar.sqrt()
        coef_x0, coef_xt = self._at(self.coef_x0, t, x0), self._at(self.coef_xt, t, x0)
        true_mean = coef_x0 * x0 + coef_xt * x_t
        model_mean = coef_x0 * pred_x0 + coef_xt * x_t
        true_log_var = self._at(self.post_log_var, t, x0)
        model_log_var = self.model_log_variance(t, var_values, x0)
        kl = 0.5 * (-1.0 + model_log_var - true_log_var + torch.exp(true_log_var - model_log_var)
                    + (true_mean - model_mean) ** 2 * torch.exp(-model_log_var)) / math.log(2.0)
        nll = -discretized_gaussian_log_likelihood(x0, model_mean, 0.5 * model_log_var) / math.log(2.0)
        first = (t == 0).view(-1, *([1] * (x0.dim() - 1)))
        return torch.where(first, nll, kl)


def _approx_standard_normal_cdf(x):
    return 0.5 * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x.pow(3))))


def discretized_gaussian_log_likelihood(x, means, log_scales):
    """Log-likelihood of data in [-1, 1] quantised to 256 bins under a Gaussian (Ho et al. 2020)."""
    centered = x - means
    inv_stdv = torch.exp(-log_scales)
    cdf_plus = _approx_standard_normal_cdf(inv_stdv * (centered + 1.0 / 255.0))
    cdf_min = _approx_standard_normal_cdf(inv_stdv * (centered - 1.0 / 255.0))
    log_cdf_plus = torch.log(cdf_plus.clamp(min=1e-12))
    log_one_minus_cdf_min = torch.log((1.0 - cdf_min).clamp(min=1e-12))
    cdf_delta = cdf_plus - cdf_min
    return torch.where(x < -0.999, log_cdf_plus,
                       torch.where(x > 0.999, log_one_minus_cdf_min, torch.log(cdf_delta.clamp(min=1e-12))))
