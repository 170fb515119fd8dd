"""Train an embedded model end to end: train, measure, write the model card."""
from __future__ import annotations

from pathlib import Path

from ..adapters.loading import EMBEDDED_DIR

TEST_SETS = {"digits": "digits-test", "mnist": "mnist-test"}


def measure(model_path: str, dataset: str, schedule: str = "100", limit: int | None = None,
            progress: bool = True) -> dict:
    from ..classifier import DiffusionClassifier
    from ..data import load_embedded
    from ..evaluate import evaluate_dataset

    clf = DiffusionClassifier.from_pretrained(model_path)
    summary = evaluate_dataset(clf, load_embedded(dataset), limit=limit, progress=progress, schedule=schedule,
                               batch_size=1000)
    return {"dataset": f"embedded:{dataset}", "schedule": schedule, **summary.to_dict()}


def train_embedded(name: str, out: str | None = None, steps: int | None = None, eval_limit: int | None = None,
                   eval_schedule: str = "100", progress: bool = True) -> dict:
    from .common import write_card
    from .pixel import RECIPES, train

    out_path = Path(out) if out else EMBEDDED_DIR / name
    recipe = RECIPES[name]
    facts = train(recipe, out_path, steps=steps, progress=progress)
    facts["test"] = measure(str(out_path), TEST_SETS[name], eval_schedule, eval_limit, progress)
    body = (f"Class-conditional pixel-space DDPM (diffusers UNet2DModel, eps-prediction, T = 1000 linear betas) "
            f"trained by dclib on `embedded:{recipe.dataset}` ({recipe.resolution}x{recipe.resolution} grayscale, "
            f"bicubic resize as the classifier prepares images), 10% label dropout to the null class "
            f"{'(index = number of classes)'}, EMA weights, early-stopped on a held-out loss. Reproduce with "
            f"`python -m dclib train {name}`. Test accuracy is Diffusion Classifier, Algorithm 1 with "
            f"{eval_schedule} evenly spaced timesteps, shared noise, measured right after training.")
    write_card(out_path, f"embedded:{name}", facts, body)
    return facts
