"""Where notebooks write their numbers, and what setting a page ran on."""
from __future__ import annotations

import json
import os
from pathlib import Path

from .adapters import resolve_model_path


def checkout_root() -> Path:
    """The root of the checkout: the folder holding book/notebooks.yml, found from the working directory upwards
    (else the working directory)."""
    here = Path.cwd().resolve()
    return next((p for p in (here, *here.parents) if (p / "book" / "notebooks.yml").exists()), here)


def results_dir() -> Path:
    """``$DCLIB_RESULTS_DIR`` (book/build_book.py sets it per preset), else ``results/PRESET/`` at the root of
    the checkout (the folder holding book/notebooks.yml, found from the working directory upwards, else the working
    directory) with PRESET = ``current_preset()``, so a smoke run never overwrites the book's numbers.
    Created if missing."""
    env = os.environ.get("DCLIB_RESULTS_DIR")
    if env:
        path = Path(env)
    else:
        path = checkout_root() / "results" / current_preset()
    path.mkdir(parents=True, exist_ok=True)
    return path


def current_preset() -> str:
    """The book preset this kernel runs under ($DCLIB_PRESET, set by book/build_book.py); a notebook run by hand
    counts as the small preset, a smoke run."""
    return os.environ.get("DCLIB_PRESET", "small")


#: What each embedded setting is, and how it differs from the paper's, for the pages that run on it.
EMBEDDED_SETTINGS = {
    ("embedded:zeroshot", "embedded:zeroshot-test"): (
        "**Setting: the zero-shot benchmark.** `embedded:zeroshot` is `embedded:shapes`, a latent text-to-image "
        "model (VAE, CLIP text encoder and cross-attention UNet, SD's noise schedule) trained from scratch on 50,000 "
        "captioned procedural scenes. `embedded:zeroshot-test` has 500 scenes of 24 fine-grained classes (4 colours "
        "x 6 shapes), each with one class object and a small distractor in a colour no class has. The prompts are "
        "'a picture of a {colour} {shape}.', a wording never used in training. **Differs from the paper:** the "
        "paper runs this zero-shot, with Stable Diffusion 2.0 on Oxford-IIIT Pets (37 breeds, 3,669 photos) at 512 "
        "px. Here the model is 1.4M parameters, the images are 32 px synthetic scenes, and the pages use a subset "
        "of the test scenes."),
    ("embedded:mnist", "embedded:mnist-test"): (
        "**Setting:** `embedded:mnist`, a class-conditional pixel DDPM trained by dclib on 3,600 MNIST digits "
        "(16 px), on the 1,000 `embedded:mnist-test` digits. **Differs from the paper:** the paper's supervised "
        "model is DiT-XL/2 on ImageNet (1,000 classes, 256 px latents)."),
}


def setting_note(model: str, dataset: str):
    """Markdown saying which model and data a page ran on and how that differs from the paper's setting."""
    from IPython.display import Markdown  # local: IPython is there in a notebook, not necessarily elsewhere

    text = EMBEDDED_SETTINGS.get((str(model), str(dataset)))
    return Markdown(text or f"**Setting:** model `{model}` on `{dataset}` (parameters of this run).")


def _training_card(model: str) -> tuple[Path, dict]:
    """(the model's folder, the facts of its dclib training card; empty for a hub id or a folder without one)."""
    path = Path(resolve_model_path(str(model)))
    card = path / "training.json"
    return path, json.loads(card.read_text()) if card.is_file() else {}


def training_history(model: str) -> list[dict]:
    """The evaluations a dclib training card recorded (``history``: step, train_loss, validation losses); empty for
    a model without one (a hub id, a folder without a dclib training card)."""
    return _training_card(model)[1].get("history", [])


def training_facts(model: str) -> dict:
    """What is known of how a model was trained, for the model-versions page: ``step`` (the training step of a
    checkpoint folder ``.../step-NNNNN``, or the step an embedded model's card says it was kept at), ``seed`` and
    ``n_scenes`` of its recipe. None where unknown (a hub id, a folder without a dclib training card)."""
    path, facts = _training_card(model)
    step = facts.get("best_step", facts.get("steps_run"))
    if step is None and path.name.startswith("step-") and path.name[5:].isdigit():
        step = int(path.name[5:])
    recipe = facts.get("recipe", {})
    return {"step": step, "seed": recipe.get("seed"), "n_scenes": recipe.get("n_scenes")}
