"""The two generative-model baselines of the paper's Table 1, for any text-to-image pipeline dclib loads.

* **Synthetic data** (zero-shot): generate images from each class prompt with the diffusion model itself,
  train a classifier on them, test it on real images. The paper generates with Stable Diffusion and trains a
  ResNet-50; here the pipeline's own sampler (DDIM) and dclib's small CNN.
* **Model features** (not zero-shot: it sees labelled real images): the UNet's mid-block activations of a
  noised image, spatially averaged, fed to a logistic regression trained on labelled real images.
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple

import numpy as np
import pandas as pd
import torch
from diffusers import DDIMScheduler, StableDiffusionPipeline
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from tqdm import tqdm

from .adapters.loading import quiet_hf_logging, resolve_model_path
from .baselines import CNNClassifier, prepare
from .classifier import image_key
from .contrastive import ContrastiveModel
from .data import zero_shot_task
from .data.shapes import ZERO_SHOT_TASKS, labelled_scenes
from .errors import InputError
from .experiments import evaluate_dataset, open_experiment, score_dataset
from .noise import make_noise
from .plan import Plan, even_timesteps
from .prompts import DEFAULT_TEMPLATE, Conditionings
from .schedules import Schedule, parse_schedule
from .stats import clopper_pearson
from .timestep_analysis import attribute_separation, single_timestep_accuracy


def load_text_to_image_pipeline(model: str, device: str = "cpu"):
    """A diffusers StableDiffusionPipeline for ``model`` (hub id, folder or ``embedded:NAME``), DDIM sampler."""
    path = resolve_model_path(model)
    with quiet_hf_logging():
        pipe = StableDiffusionPipeline.from_pretrained(path, torch_dtype=torch.float32, use_safetensors=True,
                                                       safety_checker=None, requires_safety_checker=False)
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


@torch.inference_mode()
def generate_images(pipe, prompts, n_per_prompt: int, steps: int = 25, guidance: float = 3.0, seed: int = 0,
                    batch_size: int = 64, progress: bool = True, shared_noise: bool = False
                    ) -> tuple[np.ndarray, np.ndarray]:
    """``n_per_prompt`` samples of every prompt: (uint8 images [n, H, W, 3], prompt index [n]).

    Sample j of prompt p uses a generator seeded by (seed, p, j), so the set does not depend on the batch size.
    ``shared_noise=True`` seeds by (seed, j) only: sample j of every prompt starts from the same noise, so the
    prompts' effect on the picture can be seen side by side.
    """
    jobs = [(p, j) for p in range(len(prompts)) for j in range(n_per_prompt)]
    side = pipe.unet.config.sample_size * pipe.vae_scale_factor
    shape = (pipe.unet.config.in_channels, pipe.unet.config.sample_size, pipe.unet.config.sample_size)
    images = []
    for i in tqdm(range(0, len(jobs), batch_size), desc="generating", disable=not progress):
        chunk = jobs[i:i + batch_size]
        latents = torch.stack([torch.randn(shape, generator=torch.Generator().manual_seed(
            seed * 1_000_003 + (0 if shared_noise else p * 10_007) + j)) for p, j in chunk])
        out = pipe([prompts[p] for p, _ in chunk], num_inference_steps=steps, guidance_scale=guidance,
                   height=side, width=side, latents=latents.to(pipe.device), output_type="np")
        images.append((np.clip(out.images, 0, 1) * 255).round().astype(np.uint8))
    return np.concatenate(images), np.array([p for p, _ in jobs])


def synthetic_data_baseline(model: str, prompt_rows, n_per_prompt: int = 100, steps: int = 25,
                            guidance: float = 3.0, seed: int = 0, epochs: int = 20, progress: bool = True,
                            device: str | torch.device = "cpu"):
    """Train a CNN on images generated from the class prompts; returns (classifier, images, labels).

    ``prompt_rows``: (prompt, class name, class index) rows (several prompts per class are pooled).
    Predict on real images with ``classifier.predict(prepare(images, resolution, 3))``.
    """
    rows = list(prompt_rows)
    pipe = load_text_to_image_pipeline(model, device)
    images, prompt_idx = generate_images(pipe, [r[0] for r in rows], n_per_prompt, steps, guidance, seed,
                                         progress=progress)
    labels = np.array([int(rows[p][2]) for p in prompt_idx])
    side = images.shape[1]
    clf = CNNClassifier(epochs=epochs, seed=seed).fit(prepare(images, side, 3), labels)
    return clf, images, labels


class UNetFeatures:
    """Spatially averaged mid-block activations of a diffusion classifier's denoiser at one timestep.

    The image is noised to ``t`` with noise keyed like the classifier's (seed, content hash of the image), so
    an image's features do not depend on what else is in the batch, and the denoiser is called once with
    ``condition`` (the empty prompt, or the null class).
    """
    def __init__(self, classifier, t: int = 100, seed: int = 0, condition=None):
        adapter = classifier.adapter
        network = getattr(adapter, "unet", None)
        if network is None or getattr(network, "mid_block", None) is None:
            raise InputError("model features need a UNet with a mid block (Stable Diffusion or pixel UNet models)")
        self.classifier, self.adapter, self.t, self.seed = classifier, adapter, int(t), seed
        self.mid_block = network.mid_block
        self.condition = condition  # None: the unconditional input (empty prompt / null class)
        self._captured: list[torch.Tensor] = []

    @torch.inference_mode()
    def __call__(self, images, batch_size: int = 64, progress: bool = True) -> np.ndarray:
        a = self.adapter
        cond = a.null_condition() if self.condition is None else a.encode_conditions([self.condition])
        plan = Plan((self.t,), (0,))
        feats = []
        workers, a.cpu_workers = a.cpu_workers, 1  # the mid-block hook must see each batch in one call
        # Hooked only for this call: the classifier goes on scoring (other tasks, other pages) without it.
        hook = self.mid_block.register_forward_hook(lambda module, args, output: self._captured.append(
            (output[0] if isinstance(output, tuple) else output).float().mean((-2, -1))))
        try:
            for i in tqdm(range(0, len(images), batch_size), desc="UNet features", disable=not progress):
                pixels = torch.stack([a.preprocess(im) for im in images[i:i + batch_size]])
                x0 = a.encode_images(pixels)
                eps = torch.cat([make_noise(plan, x0.shape[1:], self.seed, image_key(p)) for p in pixels])
                t = torch.full((len(x0),), self.t, dtype=torch.long)
                x_t = a.q_sample(x0, eps.to(x0.device), t.to(x0.device))
                self._captured.clear()
                a.predict(x_t, t.to(x0.device), cond.expand(len(x0), *cond.shape[1:]))
                feats.append(self._captured[-1].cpu())
        finally:
            hook.remove()
            a.cpu_workers = workers
        return torch.cat(feats).numpy()


def feature_baseline(features: UNetFeatures, train_images, train_labels, C: float = 1.0, progress: bool = True):
    """Logistic regression (standardised features) on UNet features of labelled real images."""
    x = features(train_images, progress=progress)
    return make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=3000)).fit(x, np.asarray(train_labels))


#: what a dataset task of Table 1 may say (:func:`open_zero_shot_task`)
TASK_KEYS = ("dataset", "name", "split", "prompts", "template", "train_split", "schedule")


class ZeroShotTask(NamedTuple):
    """One column of Table 1: test images, the zero-shot prompts, and labelled training images for the one
    baseline that is not zero-shot."""
    name: str
    test: Any  # rows {"image", "label", "id"}: a datasets.Dataset or dclib.experiments.LabelledImages
    rows: list  # (prompt, class name, class index), as a prompt CSV gives them
    n_classes: int
    labelled: Callable[[int], tuple[list, np.ndarray]] | None  # n -> (images, labels); None: no labelled split
    schedule: str | None = None  # this task's own Diffusion Classifier schedule (the paper's Table 6), else the page's


def zero_shot_task_specs(tasks, dataset=None, prompts=None, template: str = DEFAULT_TEMPLATE, split=None,
                         train_split=None) -> list:
    """The tasks a Table 1 page runs: ``tasks`` (embedded shapes task names or dataset specs, see
    :func:`open_zero_shot_task`), or, when ``dataset`` is given, that dataset alone with ``prompts``, ``template``,
    ``split`` and ``train_split``: the parameters every other page takes."""
    if dataset is None:
        return list(tasks)
    return [{"dataset": dataset, "prompts": prompts, "template": template, "split": split,
             "train_split": train_split}]


def open_zero_shot_task(classifier, task, seed: int = 0) -> ZeroShotTask:
    """``task``: an embedded shapes task (shape, colour, position or clutter, :func:`dclib.data.zero_shot_task`) or
    a dataset spec {"dataset": hub id / folder / embedded:NAME, "name", "split", "prompts", "template",
    "train_split", "schedule"}, opened as every page opens data (:func:`dclib.experiments.open_experiment`).
    Labelled images for the features baseline come from ``train_split`` (a seeded random subset), never from the
    test split; without one that baseline is skipped."""
    if isinstance(task, str):
        data, names, rows = zero_shot_task(task)
        return ZeroShotTask(task, data, list(rows), len(names), lambda n: labelled_scenes(task, n))
    spec = dict(task)
    unknown = sorted(set(spec) - set(TASK_KEYS))
    if unknown or "dataset" not in spec:
        raise InputError(f"a zero-shot task is an embedded task name or a dict with 'dataset' and any of "
                         f"{', '.join(TASK_KEYS[1:])}; got {task!r}")
    if not classifier.adapter.text_conditioned:
        raise InputError("Table 1 scores class prompts: it needs a text-to-image model, not a class-conditional one")
    opened = dict(prompts=spec.get("prompts"), template=spec.get("template") or DEFAULT_TEMPLATE)
    test = open_experiment(classifier, spec["dataset"], split=spec.get("split"), **opened)
    conds = test.conditionings
    rows = [(str(v), conds.class_names[c], int(c)) for v, c in zip(conds.values, conds.class_idx)]

    def labelled(n: int):
        # a seeded sample stratified by class, as every page draws its images
        picked = open_experiment(classifier, spec["dataset"], split=spec["train_split"], n_images=n,
                                 shuffle_seed=seed, **opened).data
        if picked.source.split == test.data.source.split:  # e.g. an image folder: one split serves as both
            raise InputError(f"train_split {spec['train_split']!r} of {spec['dataset']} is the split the task tests "
                             f"on: the features baseline needs labelled images the test never sees")
        return picked["image"], np.asarray(picked["label"])
    return ZeroShotTask(str(spec.get("name") or spec["dataset"]), test.data, rows, conds.n_classes,
                        labelled if spec.get("train_split") else None, spec.get("schedule"))


def open_zero_shot_tasks(classifier, tasks, dataset=None, prompts=None, template: str = DEFAULT_TEMPLATE, split=None,
                         train_split=None, seed: int = 0) -> list[ZeroShotTask]:
    """:func:`open_zero_shot_task` on each of :func:`zero_shot_task_specs` (the page's parameters, in its order)."""
    return [open_zero_shot_task(classifier, task, seed)
            for task in zero_shot_task_specs(tasks, dataset, prompts, template, split, train_split)]


def predict_in_chunks(data, predict: Callable[[list], Any], chunk: int = 256) -> np.ndarray:
    """``predict`` (a list of images -> one label each) over every image of ``data``, ``chunk`` images at a time,
    so that a whole test set is never decoded into memory at once."""
    chunks = (range(start, min(start + chunk, len(data))) for start in range(0, len(data), chunk))
    return np.concatenate([np.asarray(predict([data[i]["image"] for i in rows])) for rows in chunks])


def flat_plan(schedule, num_train_timesteps: int = 1000) -> Plan | None:
    """The plan of an Algorithm 1 schedule (``"N"``: every class on the same N timesteps), None for any other."""
    parsed = parse_schedule(schedule)
    if isinstance(parsed, Schedule) and parsed.keep == (1,):
        return parsed.stage_plans(num_train_timesteps)[0]
    return None


def zero_shot_comparison(task: ZeroShotTask, classifier, model: str, contrastive: str | None = "embedded:shapes-clip",
                         n_images: int | None = 100, schedule: str = "50", n_generated: int = 50,
                         generation_steps: int = 25, guidance: float = 3.0, n_feature_train: int = 500,
                         feature_t: int = 100, cnn_epochs: int = 20, seed: int = 0, batch_size: "int | str" = 500,
                         progress: bool = True):
    """Table 1 on one task: accuracy with 95% Clopper-Pearson intervals of Diffusion Classifier, the contrastive
    model, the synthetic-data CNN and the UNet-feature logistic regression (when the task has labelled
    images), all on the same first ``n_images`` test images (None: all). Diffusion Classifier runs the task's own
    schedule if it has one, else ``schedule``. ``classifier`` is ``model`` loaded; the generator is ``model``'s
    pipeline on the classifier's device. Returns (table, {method: per-image correctness})."""
    n = len(task.test) if n_images is None else min(n_images, len(task.test))
    data = task.test.select(range(n))
    labels, rows, device = np.asarray(data["label"]), task.rows, classifier.adapter.device
    preds = {}
    plan = flat_plan(task.schedule or schedule, classifier.adapter.num_train_timesteps)
    if plan is not None:  # Algorithm 1 through the error cache, where the per-timestep probe reads it back
        preds["Diffusion Classifier"] = score_dataset(classifier, data, plan, Conditionings.from_rows(rows), seed=seed,
                                                      batch_size=batch_size, progress=progress).predictions()
    else:
        preds["Diffusion Classifier"] = evaluate_dataset(
            classifier, data, progress=progress, desc=f"{task.name}: Diffusion Classifier", prompts=rows,
            schedule=task.schedule or schedule, seed=seed, batch_size=batch_size).predictions
    if contrastive:
        clip = ContrastiveModel.from_pretrained(contrastive, device=device)
        preds["contrastive"] = predict_in_chunks(data, lambda images: clip.classify(images, rows).predictions)
    synth, generated, _ = synthetic_data_baseline(model, rows, n_generated, generation_steps, guidance, seed,
                                                  cnn_epochs, progress, device)
    preds["synthetic data (CNN)"] = predict_in_chunks(
        data, lambda images: synth.predict(prepare(images, generated.shape[1], 3)))
    if task.labelled is not None:
        features = UNetFeatures(classifier, t=feature_t, seed=seed)
        train_x, train_y = task.labelled(n_feature_train)
        lr = feature_baseline(features, list(train_x), train_y, progress=progress)
        preds["UNet features (LR)"] = predict_in_chunks(data, lambda images: lr.predict(features(images, progress=False)))
    zero_shot = {"Diffusion Classifier": True, "contrastive": True, "synthetic data (CNN)": True,
                 "UNet features (LR)": False}
    out, right = [], {}
    for method, p in preds.items():
        right[method] = np.asarray(p) == labels
        correct = int(right[method].sum())
        low, high = clopper_pearson(correct, len(labels))
        out.append({"task": task.name, "method": method, "zero_shot": zero_shot[method],
                    "accuracy": correct / len(labels), "ci_low": low, "ci_high": high, "n": len(labels),
                    "classes": task.n_classes})
    return pd.DataFrame(out), right


def zero_shot_comparisons(classifier, tasks, model: str, contrastive: str | None = "embedded:shapes-clip",
                          **options) -> tuple[pd.DataFrame, dict]:
    """:func:`zero_shot_comparison` on each task (:class:`ZeroShotTask`) in turn: (one table, the tasks' rows in
    order; {(task, method): which of the task's first n test images the method got right}). ``options`` are
    those of :func:`zero_shot_comparison`."""
    tables, right = [], {}
    for task in tasks:
        table, correct = zero_shot_comparison(task, classifier, model, contrastive, **options)
        tables.append(table)
        right.update({(task.name, method): c for method, c in correct.items()})
    return pd.concat(tables, ignore_index=True), right


POOLED = "pooled over the tasks"


def paired_correctness(right: dict, method: str, label: str | None = None,
                       reference: str = "Diffusion Classifier") -> dict:
    """The paired evidence a claim compares, per task: {"TASK: DC vs LABEL": (reference's correctness,
    method's correctness)}, from :func:`per_image_correct` (``label`` defaults to ``method``), and the tasks'
    images together under "pooled over the tasks (DC vs LABEL)" (each task with its own images)."""
    tasks = list(dict.fromkeys(t for t, _ in right))
    paired = {f"{t}: DC vs {label or method}": (right[t, reference], right[t, method]) for t in tasks}
    paired[f"{POOLED} (DC vs {label or method})"] = tuple(
        np.concatenate([np.asarray(right[t, m], bool) for t in tasks]) for m in (reference, method))
    return paired


def chance_rates(tasks, paired: dict) -> dict:
    """{label: chance accuracy} for every label of :func:`paired_correctness`: 1 / classes of the label's task,
    and for the pooled label the mean over its images."""
    chance = {task.name: 1 / task.n_classes for task in tasks}
    per_task = {k: (chance[k.split(": DC vs ")[0]], len(v[0])) for k, v in paired.items() if not k.startswith(POOLED)}
    images = sum(n for _, n in per_task.values())
    pooled = sum(rate * n for rate, n in per_task.values()) / max(images, 1)
    return {k: per_task[k][0] if k in per_task else pooled for k in paired}


def accuracy_sentence(table: pd.DataFrame) -> str:
    """"TASK: METHOD 83%, ...; TASK: ..." for every task of :func:`zero_shot_comparisons`' table (methods
    in alphabetical order), ending with a full stop."""
    acc = table.pivot(index="method", columns="task", values="accuracy")
    return "; ".join(f"{t}: " + ", ".join(f"{m} {acc.loc[m, t]:.0%}" for m in acc.index)
                     for t in dict.fromkeys(table.task)) + "."


def single_timestep_by_task(classifier, tasks, n_timesteps: int = 10, n_images: int = 12, seed: int = 0,
                            progress: bool = False) -> pd.DataFrame:
    """Fig. 3 per zero-shot task (:class:`ZeroShotTask`): each task's first ``n_images`` test images scored with its
    zero-shot prompts at ``n_timesteps`` evenly spaced timesteps (one noise each), and the accuracy from each
    timestep alone. One row per (task, t): columns t, accuracy, ci_low, ci_high (95%), task, chance (1 / classes)."""
    plan = Plan.from_timesteps(even_timesteps(n_timesteps, classifier.adapter.num_train_timesteps))
    per_timestep = []
    for task in tasks:
        errors = score_dataset(classifier, task.test, plan, Conditionings.from_rows(task.rows), n_images=n_images,
                               seed=seed, progress=progress)
        per_timestep.append(single_timestep_accuracy(errors).assign(task=task.name, chance=1 / task.n_classes))
    return pd.concat(per_timestep, ignore_index=True)


def describe_best_timesteps(per_timestep: pd.DataFrame) -> str:
    """One line per task of :func:`single_timestep_by_task`'s table: its best single timestep, the accuracy
    there with its 95% interval, and chance."""
    best = per_timestep.loc[per_timestep.groupby("task", sort=False).accuracy.idxmax()]
    return "\n".join(f"{row.task}: best single timestep t = {row.t}: {row.accuracy:.0%} "
                     f"(95% interval {row.ci_low:.0%}-{row.ci_high:.0%}; chance {row.chance:.0%})"
                     for row in best.itertuples())


def attribute_separations(classifier, tasks, n_scenes: int) -> dict:
    """{task: median d' between classes at every timestep [T]} (:func:`dclib.timestep_analysis.attribute_separation`)
    for the embedded single-object tasks among ``tasks`` (one attribute re-rendered). Others (clutter, datasets)
    have no scene to re-render and are skipped."""
    names = [task.name if isinstance(task, ZeroShotTask) else task for task in tasks]
    return {name: attribute_separation(classifier, name, n_scenes) for name in names
            if isinstance(name, str) and name in ZERO_SHOT_TASKS}


def describe_separations(separation: dict, reference: str | None = None) -> str:
    """One line per curve of :func:`attribute_separations`: d' at the middle and the last timestep, and (but for
    ``reference``'s own line; default the first curve) the last value as a multiple of ``reference``'s curve's."""
    if not separation:
        return "No embedded single-object task among the tasks: no scene to re-render once per class."
    reference = reference or next(iter(separation))
    return "\n".join(
        f"{task}: median d' {curve[len(curve) // 2]:.1f} at t = {len(curve) // 2}, {curve[-1]:.2f} at t = {len(curve) - 1}"
        + ("" if task == reference else f"; {curve[-1] / separation[reference][-1]:.1f}x the {reference} curve")
        for task, curve in separation.items())
