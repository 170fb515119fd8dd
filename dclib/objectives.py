"""Per-sample error terms: the paper's losses (Tables 8-9) and objectives (Table 5).

Every function maps tensors [B, C, H, W] to elementwise terms [B, C, H, W]; the engine crops them and takes the
mean over elements, as the official code does (``F.mse_loss(..., reduction="none").mean(dim=(1, 2, 3))``).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .errors import InputError

LOSSES = ("l2", "l1", "huber")
OBJECTIVES = ("uniform", "elbo", "vlb", "uniform+vlb")


def check_loss(loss: str) -> str:
    """``loss`` itself when it is one of :data:`LOSSES`, else a clear error."""
    if loss not in LOSSES:
        raise InputError(f"unknown loss {loss!r}: use one of {', '.join(LOSSES)}")
    return loss


def loss_terms(eps: torch.Tensor, eps_pred: torch.Tensor, loss: str) -> torch.Tensor:
    """Elementwise loss between the true and predicted noise: squared error, absolute error or Huber (delta 1)."""
    check_loss(loss)
    if loss == "l2":
        return F.mse_loss(eps_pred, eps, reduction="none")
    if loss == "l1":
        return F.l1_loss(eps_pred, eps, reduction="none")
    return F.huber_loss(eps_pred, eps, reduction="none", delta=1.0)


def elbo_weights(betas: torch.Tensor) -> torch.Tensor:
    """w_t of the exact ELBO (paper eq. 3) with sigma_t^2 = beta_t: beta_t / (2 alpha_t (1 - abar_t)).

    The paper sets w_t = 1 (the "uniform" objective); Table 5 compares against this weighting.
    """
    betas = betas.double()
    alphas = 1 - betas
    abar = torch.cumprod(alphas, 0)
    return betas / (2 * alphas * (1 - abar))


class GaussianPosterior:
    """q(x_{t-1} | x_t, x0) coefficients and the learned-variance interpolation of improved DDPM / DiT."""

    def __init__(self, betas: torch.Tensor):
        betas = betas.double()
        alphas = 1 - betas
        abar = torch.cumprod(alphas, 0)
        abar_prev = torch.cat([torch.ones(1, dtype=torch.float64), abar[:-1]])
        self.abar = abar
        self.log_betas = betas.log()
        post_var = betas * (1 - abar_prev) / (1 - abar)
        # The variance at t = 0 is 0; like DiT, clip its log with the value at t = 1.
        self.post_log_var = torch.cat([post_var[1:2], post_var[1:]]).log()
        self.coef_x0 = betas * abar_prev.sqrt() / (1 - abar)
        self.coef_xt = (1 - abar_prev) * alphas.sqrt() / (1 - abar)

    def _at(self, values: torch.Tensor, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return values.to(like.device)[t].float().view(-1, *([1] * (like.dim() - 1)))

    def vlb_terms(self, x0, x_t, t, eps_pred, var_values) -> torch.Tensor:
        """Elementwise variational bound in bits: KL(q(x_{t-1}|x_t,x0) || p(x_{t-1}|x_t)) for t > 0 and the
        discretized Gaussian decoder NLL for t = 0, exactly as DiT's ``_vb_terms_bpd`` (no clipping)."""
        if var_values is None:
            raise InputError("the VLB objective needs a model that predicts its variance (learned sigma)")
        abar = self._at(self.abar, t, x0)
        pred_x0 = (x_t - (1 - abar).sqrt() * eps_pred) / abar.sqrt()
        coef_x0, coef_xt = self._at(self.coef_x0, t, x0), self._at(self.coef_xt, t, x0)
        true_mean = coef_x0 * x0 + coef_xt * x_t
        model_mean = coef_x0 * pred_x0 + coef_xt * x_t
        min_log, max_log = self._at(self.post_log_var, t, x0), self._at(self.log_betas, t, x0)
        frac = (var_values + 1) / 2
        model_log_var = frac * max_log + (1 - frac) * min_log
        kl = 0.5 * (-1.0 + model_log_var - min_log + torch.exp(min_log - model_log_var)
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
