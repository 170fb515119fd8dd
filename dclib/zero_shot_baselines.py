"""The two generative-model baselines of the paper's Table 1, for any text-to-image pipeline dclib loads.

* **Synthetic data** (zero-shot): generate images from each class prompt with the diffusion model itself,
  train a classifier on them, test it on real images. The paper generates with Stable Diffusion and trains a
  ResNet-50; here the pipeline's own sampler (DDIM) and dclib's small CNN.
* **Model features** (not zero-shot: it sees labelled real images): the UNet's mid-block activations of a
  noised image, spatially averaged, fed to a logistic regression trained on labelled real images.
"""
from __future__ import annotations

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
from .classifier import DiffusionClassifier, image_key
from .contrastive import ContrastiveModel
from .data import zero_shot_task
from .data.shapes import ZERO_SHOT_TASKS, labelled_scenes
from .errors import InputError
from .experiments import attribute_separation, evaluate_dataset, score_dataset, single_timestep_accuracy
from .noise import make_noise
from .plan import Plan, even_timesteps
from .prompts import Conditionings
from .stats import clopper_pearson


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
                            guidance: float = 3.0, seed: int = 0, epochs: int = 20, progress: bool = True):
    """Train a CNN on images generated from the class prompts; returns (classifier, images, labels).

    ``prompt_rows``: (prompt, class name, class index) rows (several prompts per class are pooled).
    Predict on real images with ``classifier.predict(prepare(images, resolution, 3))``.
    """
    rows = list(prompt_rows)
    pipe = load_text_to_image_pipeline(model)
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
        self.condition = condition  # None: the unconditional input (empty prompt / null class)
        self._captured: list[torch.Tensor] = []
        network.mid_block.register_forward_hook(lambda module, args, output: self._captured.append(
            (output[0] if isinstance(output, tuple) else output).float().mean((-2, -1))))

    @torch.inference_mode()
    def __call__(self, images, batch_size: int = 64, progress: bool = True) -> np.ndarray:
        a = self.adapter
        cond = a.null_condition() if self.condition is None else a.encode_conditions([self.condition])
        plan = Plan((self.t,), (0,))
        feats = []
        workers, a.cpu_workers = a.cpu_workers, 1  # the mid-block hook must see each batch in one call
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
            a.cpu_workers = workers
        return torch.cat(feats).numpy()


def feature_baseline(features: UNetFeatures, train_images, train_labels, C: float = 1.0, progress: bool = True):
    """Logistic regression (standardised features) on UNet features of labelled real images."""
    x = features(train_images, progress=progress)
    return make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=3000)).fit(x, np.asarray(train_labels))


def zero_shot_comparison(task: str, model: str = "embedded:shapes", contrastive: str | None = "embedded:shapes-clip",
                         n_images: int = 100, schedule: str = "50", n_generated: int = 50,
                         generation_steps: int = 25, guidance: float = 3.0, n_feature_train: int = 500,
                         feature_t: int = 100, cnn_epochs: int = 20, seed: int = 0, progress: bool = True):
    """Table 1 on one embedded shapes task (shape, colour or position): accuracy with 95% Clopper-Pearson
    intervals of Diffusion Classifier, the contrastive model, the synthetic-data CNN and the UNet-feature
    logistic regression, all on the same first ``n_images`` test scenes. Returns (table, predictions)."""
    data, names, rows = zero_shot_task(task)
    data = data.select(range(min(n_images, len(data))))
    images, labels = [r["image"] for r in data], np.asarray(data["label"])
    side = np.asarray(images[0]).shape[0]
    clf = DiffusionClassifier.from_pretrained(model)
    preds = {}
    preds["Diffusion Classifier"] = evaluate_dataset(
        clf, data, progress=progress, desc=f"{task}: Diffusion Classifier", prompts=rows, schedule=schedule, seed=seed,
        batch_size=500).predictions
    if contrastive:
        preds["contrastive"] = np.asarray(ContrastiveModel.from_pretrained(contrastive).classify(images, rows).predictions)
    synth, _, _ = synthetic_data_baseline(model, rows, n_generated, generation_steps, guidance, seed, cnn_epochs,
                                          progress)
    preds["synthetic data (CNN)"] = synth.predict(prepare(images, side, 3))
    features = UNetFeatures(clf, t=feature_t, seed=seed)
    train_x, train_y = labelled_scenes(task, n_feature_train)
    lr = feature_baseline(features, list(train_x), train_y, progress=progress)
    preds["UNet features (LR)"] = lr.predict(features(images, progress=progress))
    zero_shot = {"Diffusion Classifier": True, "contrastive": True, "synthetic data (CNN)": True,
                 "UNet features (LR)": False}
    out = []
    for method, p in preds.items():
        correct = int((p == labels).sum())
        low, high = clopper_pearson(correct, len(labels))
        out.append({"task": task, "method": method, "zero_shot": zero_shot[method], "accuracy": correct / len(labels),
                    "ci_low": low, "ci_high": high, "n": len(labels), "classes": len(names)})
    return pd.DataFrame(out), preds


def zero_shot_comparisons(tasks, model: str = "embedded:shapes", contrastive: str | None = "embedded:shapes-clip",
                          **options) -> tuple[pd.DataFrame, dict]:
    """:func:`zero_shot_comparison` on each task in turn: (one table, the tasks' rows in order; predictions
    {task: {method: predicted labels}}). ``options`` are those of :func:`zero_shot_comparison`."""
    tables, predictions = [], {}
    for task in tasks:
        table, predictions[task] = zero_shot_comparison(task, model, contrastive, **options)
        tables.append(table)
    return pd.concat(tables, ignore_index=True), predictions


def per_image_correct(predictions: dict) -> dict:
    """{(task, method): bool [n]}: which of a task's first n test scenes each method got right, from
    :func:`zero_shot_comparisons`' predictions ({task: {method: labels [n]}})."""
    return {(t, m): p == np.asarray(zero_shot_task(t)[0]["label"][:len(p)])
            for t in predictions for m, p in predictions[t].items()}


def paired_correctness(right: dict, method: str, label: str | None = None,
                       reference: str = "Diffusion Classifier") -> dict:
    """The paired evidence a claim compares, per task: {"TASK: DC vs LABEL": (reference's correctness,
    method's correctness)}, from :func:`per_image_correct` (``label`` defaults to ``method``)."""
    tasks = dict.fromkeys(t for t, _ in right)
    return {f"{t}: DC vs {label or method}": (right[t, reference], right[t, method]) for t in tasks}


def accuracy_sentence(table: pd.DataFrame) -> str:
    """"TASK: METHOD 83%, ...; TASK: ..." for every task of :func:`zero_shot_comparisons`' table (methods
    in alphabetical order), ending with a full stop."""
    acc = table.pivot(index="method", columns="task", values="accuracy")
    return "; ".join(f"{t}: " + ", ".join(f"{m} {acc.loc[m, t]:.0%}" for m in acc.index)
                     for t in dict.fromkeys(table.task)) + "."


def single_timestep_by_task(classifier, tasks, n_timesteps: int = 10, n_images: int = 12, seed: int = 0,
                            progress: bool = False) -> pd.DataFrame:
    """Fig. 3 per zero-shot task: each task's first ``n_images`` test scenes scored with its zero-shot prompts
    at ``n_timesteps`` evenly spaced timesteps (one noise each), and the accuracy from each timestep alone.
    One row per (task, t): columns t, accuracy, ci_low, ci_high (95%), task, chance (1 / classes)."""
    plan = Plan.from_timesteps(even_timesteps(n_timesteps))
    per_timestep = []
    for task in tasks:
        data, names, rows = zero_shot_task(task)
        errors = score_dataset(classifier, data, plan, Conditionings.from_rows(rows), n_images=n_images, seed=seed,
                               progress=progress)
        per_timestep.append(single_timestep_accuracy(errors).assign(task=task, chance=1 / len(names)))
    return pd.concat(per_timestep, ignore_index=True)


def describe_best_timesteps(per_timestep: pd.DataFrame) -> str:
    """One line per task of :func:`single_timestep_by_task`'s table: its best single timestep, the accuracy
    there with its 95% interval, and chance."""
    best = per_timestep.loc[per_timestep.groupby("task", sort=False).accuracy.idxmax()]
    return "\n".join(f"{row.task}: best single timestep t = {row.t}: {row.accuracy:.0%} "
                     f"(95% interval {row.ci_low:.0%}-{row.ci_high:.0%}; chance {row.chance:.0%})"
                     for row in best.itertuples())


def attribute_separations(classifier, tasks, n_scenes: int) -> dict:
    """{task: median d' between classes at every timestep [T]} (:func:`dclib.experiments.attribute_separation`)
    for the single-object tasks among ``tasks`` (one attribute re-rendered; others, such as clutter, skipped)."""
    return {task: attribute_separation(classifier, task, n_scenes) for task in tasks if task in ZERO_SHOT_TASKS}


def describe_separations(separation: dict, reference: str) -> str:
    """One line per curve of :func:`attribute_separations`: d' at the middle and the last timestep, and (but for
    ``reference``'s own line) the last value as a multiple of ``reference``'s curve's."""
    return "\n".join(
        f"{task}: median d' {curve[len(curve) // 2]:.1f} at t = {len(curve) // 2}, {curve[-1]:.2f} at t = {len(curve) - 1}"
        + ("" if task == reference else f"; {curve[-1] / separation[reference][-1]:.1f}x the {reference} curve")
        for task, curve in separation.items())
