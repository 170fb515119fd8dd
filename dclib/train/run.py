"""Train an embedded model end to end: train, measure with dclib itself, write the model card."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..adapters.loading import EMBEDDED_DIR
from ..classifier import DiffusionClassifier
from ..prompts import Conditionings
from ..schedules import Schedule
from ..stats import clopper_pearson
from .common import write_card

# The CLI imports NAMES from here at start-up, so what loads datasets, pandas, diffusers or transformers
# (seconds) is imported inside the functions that train or measure.

TEST_SETS = {"digits": "digits-test", "mnist": "mnist-test", "mnist-learned-variance": "mnist-test"}
BENCHMARK_SCHEDULE = "20"
NAMES = ("digits", "mnist", "mnist-learned-variance", "shapes", "shapes-25k", "shapes-clip", "manyclass",
         "manyclass-clip")
#: class counts the many-class card measures (embedded:manyclass-test-K; the paper's cost grows with K)
MANYCLASS_SIZES = (25, 200)


def measure(model_path: str, dataset: str, schedule: str = "100", limit: int | None = None,
            progress: bool = True) -> dict:
    """Diffusion Classifier test accuracy of a class-conditional model (Algorithm 1, shared noise)."""
    from ..data import load_embedded  # heavy (see the note above)
    from ..experiments import evaluate_dataset

    clf = DiffusionClassifier.from_pretrained(model_path)
    summary = evaluate_dataset(clf, load_embedded(dataset), limit=limit, progress=progress, schedule=schedule,
                               batch_size=1000)
    return {"dataset": f"embedded:{dataset}", "schedule": schedule, **summary.to_dict()}


def measure_shapes(model_path: str, kind: str, limit: int = 200, wino_limit: int = 200, schedule: str = "50",
                   progress: bool = True) -> dict:
    """Zero-shot shape / colour / position accuracy (held-out prompt wording) and Winoground-style scores, for
    the text-to-image model (kind "diffusion") or the contrastive baseline (kind "contrastive")."""
    from ..compositional import diffusion_match_scores, summarize_scores, winoground_table  # heavy (see above)
    from ..data import wino_dataset, zero_shot_task
    from ..data.shapes import CLUTTER_TASK

    out = {"schedule": schedule if kind == "diffusion" else None, "zero_shot": {}, "limit": limit}
    if kind == "diffusion":
        model = DiffusionClassifier.from_pretrained(model_path)
        plan = Schedule.parse(schedule).stage_plans()[0]
        match = lambda images, captions, item: diffusion_match_scores(model, images, captions, plan, item_id=item)
    else:
        from ..contrastive import ContrastiveModel  # transformers' CLIP: seconds, which `--help` must not wait for

        model = ContrastiveModel.from_pretrained(model_path)
        match = lambda images, captions, item: model.scores(images, captions).T
    def accuracy(task: str, task_schedule: str) -> dict:
        """Zero-shot accuracy on the first ``limit`` scenes of a task, with its own prompts."""
        data, names, rows = zero_shot_task(task)
        data = data.select(range(min(limit, len(data))))
        conds = Conditionings.from_rows(rows)
        if kind == "diffusion":
            preds = [model.classify(r["image"], prompts=conds, schedule=task_schedule, image_id=r["id"],
                                    batch_size=500).prediction for r in data]
        else:
            preds = model.classify(list(data["image"]), rows).predictions
        correct = int((np.asarray(preds) == np.asarray(data["label"])).sum())
        return {"accuracy": correct / len(data), "ci95": clopper_pearson(correct, len(data)), "n": len(data)}

    for task in ("shape", "colour", "position"):
        out["zero_shot"][task] = {**accuracy(task, schedule), "prompt_example": zero_shot_task(task)[2][0][0]}
    # the zero-shot benchmark (embedded:zeroshot-test, its own prompts) at the book's budget of 20 timesteps
    out["zeroshot_benchmark"] = {**accuracy(CLUTTER_TASK, BENCHMARK_SCHEDULE),
                                 "schedule": BENCHMARK_SCHEDULE if kind == "diffusion" else None}
    # every swap type and template split in equal numbers (the dataset lists them in blocks)
    wino = wino_dataset(per_swap=max(1, wino_limit // 6))
    table = winoground_table(match, wino, progress=progress)
    out["winoground"] = json.loads(summarize_scores(table, by=("template_split", "swap_type")).round(1)
                                   .reset_index().to_json(orient="records"))
    return out


def measure_manyclass(model_path: str, kind: str = "diffusion", limit: int = 100, schedule: str = BENCHMARK_SCHEDULE,
                      sizes: tuple[int, ...] = MANYCLASS_SIZES, progress: bool = True) -> dict:
    """Zero-shot top-1 of a many-class model (kind "diffusion": the text-to-image model, Algorithm 1 with
    ``schedule`` evenly spaced timesteps and shared noise; "contrastive": its CLIP partner) on ``limit`` pictures of
    ``embedded:manyclass-test-K`` (a seeded class-balanced sample) for each K in ``sizes``, prompted with the set's
    own prompt CSV (HELD-OUT wording); 95% Clopper-Pearson intervals."""
    from ..data import load_embedded  # heavy (see the note above)
    from ..data.registry import embedded_prompt_file
    from ..prompts import read_prompt_file
    from ..runs import stratified_order

    if kind == "diffusion":
        from ..experiments import score_dataset

        clf = DiffusionClassifier.from_pretrained(model_path)
        plan = Schedule.parse(schedule).stage_plans(clf.adapter.num_train_timesteps)[0]
        predict = lambda data, conds: score_dataset(clf, data, plan, conds, batch_size=1000,
                                                    progress=progress).predictions()
    else:
        from ..contrastive import ContrastiveModel

        clip = ContrastiveModel.from_pretrained(model_path)
        predict = lambda data, conds: clip.classify(list(data["image"]), conds).predictions
    out = {"schedule": schedule if kind == "diffusion" else None, "limit": limit, "top1": {}}
    for k in sizes:
        name = f"embedded:manyclass-test-{k}"
        data = load_embedded(name)
        data = data.select(stratified_order(data["label"], seed=0)[:limit])  # every prefix class-balanced, seeded
        labels = np.asarray(data["label"])
        correct, n = int((predict(data, read_prompt_file(embedded_prompt_file(name))) == labels).sum()), len(labels)
        out["top1"][k] = {"dataset": name, "accuracy": correct / n, "ci95": clopper_pearson(correct, n), "n": n}
    return out


def train_embedded(name: str, out: str | None = None, steps: int | None = None, eval_limit: int | None = None,
                   eval_schedule: str = "100", progress: bool = True, measure_only: bool = False) -> dict:
    """Train (or with ``measure_only``, re-measure an already trained folder) and write the model card."""
    out_path = Path(out) if out else EMBEDDED_DIR / name
    if measure_only and not (out_path / "training.json").exists():
        raise FileNotFoundError(f"{out_path} holds no trained model (training.json) to measure")
    if name.startswith(("shapes", "manyclass")):
        from .shapes import CLIP_RECIPES, SHAPES_RECIPES, train_shapes, train_shapes_clip  # heavy (see above)

        diffusion = name in SHAPES_RECIPES
        if measure_only:
            facts = json.loads((out_path / "training.json").read_text())  # keeps the training machine
        elif diffusion:
            facts = train_shapes(out_path, steps=steps, progress=progress, recipe=SHAPES_RECIPES[name])
        else:
            facts = train_shapes_clip(out_path, steps=steps, progress=progress, recipe=CLIP_RECIPES[name])
        if name.startswith("manyclass"):
            facts["test"] = measure_manyclass(str(out_path), "diffusion" if diffusion else "contrastive",
                                              limit=eval_limit or (100 if diffusion else 2000), progress=progress)
        else:
            facts["test"] = measure_shapes(str(out_path), "diffusion" if diffusion else "contrastive",
                                           limit=eval_limit or 200, progress=progress)
        card = (out_path / "README.md").read_text().split("\n", 2)
        write_card(out_path, f"embedded:{name}", facts, card[2].split("| fact |")[0] if len(card) > 2 else "")
        return facts
    from .pixel import RECIPES, train  # heavy (see above)

    recipe = RECIPES[name]
    if measure_only:
        facts = json.loads((out_path / "training.json").read_text())
    else:
        facts = train(recipe, out_path, steps=steps, progress=progress)
    facts["test"] = measure(str(out_path), TEST_SETS[name], eval_schedule, eval_limit, progress)
    body = (f"Class-conditional pixel-space DDPM (diffusers UNet2DModel, eps-prediction, T = 1000 linear betas) "
            f"trained by dclib on `embedded:{recipe.dataset}` ({recipe.resolution}x{recipe.resolution} grayscale, "
            f"bicubic resize as the classifier prepares images), 10% label dropout to the null class "
            f"(index = number of classes), EMA weights, early-stopped on a held-out loss. Reproduce with "
            f"`python -m dclib train {name}`. Test accuracy is Diffusion Classifier, Algorithm 1 with "
            f"{eval_schedule} evenly spaced timesteps, shared noise, measured right after training.")
    if recipe.learned_variance:
        body += ("\n\nLearned variance (the DiT analogue): the UNet outputs eps and v, twice the image channels; the "
                 "scheduler is `DDPMScheduler(variance_type=\"learned_range\")`, log sigma_t^2 = v' log beta_t + "
                 "(1 - v') log beta~_t with v' = (v + 1) / 2. Trained on improved DDPM's hybrid objective "
                 "L_simple + L_vlb (per timestep, bits per dimension; lambda = 0.001 of the VLB summed over "
                 "T = 1000), the VLB seeing the eps output detached as in DiT, so it trains the variance only. "
                 "`val_loss` is L_simple; `best_val_loss` is L_simple + L_vlb, the objective trained on.")
    write_card(out_path, f"embedded:{name}", facts, body)
    return facts
