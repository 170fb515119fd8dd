"""Figures of the flow-matching page (notebooks/flow_matching.ipynb): a rectified-flow model's noise scale and the
training density of its timesteps."""
from __future__ import annotations

import numpy as np


def schedule_and_training_density(adapter, draws: np.ndarray):
    """Left: sigma_t of the model's scheduler (its shift) against an unshifted line; right: a histogram of
    ``draws`` (timesteps from :func:`dclib.logit_normal_plan`) against the uniform density of an even grid."""
    import matplotlib.pyplot as plt  # here, not at import: pyplot picks a backend when imported

    T = adapter.num_train_timesteps
    t = np.arange(T)
    shift = adapter.scheduler.config.get("shift")
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.3))
    axes[0].plot(t, adapter.sigmas.numpy(), label=f"shift {shift} (the model's)")
    axes[0].plot(t, (t + 1) / T, ls="--", label="no shift")
    axes[0].set_xlabel("dclib timestep t")
    axes[0].set_ylabel("noise level sigma")
    axes[0].legend(fontsize=8)
    axes[0].set_title("noise scale from the model's scheduler")
    axes[1].hist(draws, bins=50, density=True, alpha=0.7, label="logit-normal (SD3 training)")
    axes[1].axhline(1 / T, color="k", ls=":", label="evenly spaced / uniform")
    axes[1].set_xlabel("dclib timestep t")
    axes[1].set_ylabel("density")
    axes[1].legend(fontsize=8)
    axes[1].set_title(f"{len(draws)} timesteps drawn by logit_normal_plan")
    fig.tight_layout()
    return fig
