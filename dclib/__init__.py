"""dclib: Diffusion Classifier (Li et al., ICCV 2023) for diffusers models.

Data flows one way: plan (which t, eps, conditionings) -> score (batched denoiser calls -> error matrix)
-> decide (mean, adaptive pruning, posterior).
"""
__version__ = "0.1.0"

import warnings as _warnings

# tqdm.auto (imported by datasets/diffusers) warns in every notebook that ipywidgets is missing; dclib's bars are
# plain text, so the warning is noise.
_warnings.filterwarnings("ignore", message="IProgress not found")

from .classifier import DiffusionClassifier
from .decide import Classification
from .errors import DclibError, InputError, ModelNotFoundError
from .noise import NoiseDistribution, make_noise
from .plan import Plan, even_plan, even_timesteps, fixed_plan, logit_normal_plan, uniform_plan, window_plan
from .prompts import Conditionings, read_prompt_file
from .schedules import PairedPruning, Schedule, parse_schedule
from .scoring import ScoreOptions, Scorer

__all__ = ["DiffusionClassifier", "Classification", "DclibError", "InputError", "ModelNotFoundError",
           "NoiseDistribution", "make_noise", "Plan", "Schedule", "PairedPruning", "parse_schedule", "even_plan", "even_timesteps", "fixed_plan",
           "logit_normal_plan", "uniform_plan", "window_plan", "Conditionings", "read_prompt_file", "ScoreOptions",
           "Scorer"]
