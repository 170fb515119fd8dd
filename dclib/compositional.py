"""Winoground-style compositional scores (Thrush et al. 2022; the paper's Table 3).

Each item holds two images and two captions made of the same words in a different order; image_i matches
caption_i. With s(c, x) a match score (higher is better):

- text score: s(c0, x0) > s(c1, x0) and s(c1, x1) > s(c0, x1)  (pick the right caption for each image)
- image score: s(c0, x0) > s(c0, x1) and s(c1, x1) > s(c1, x0)  (pick the right image for each caption)
- group score: both.

For Diffusion Classifier s(c, x) = -E||eps - eps(x_t, c)||^2 over shared samples. Comparing one caption across
two images compares errors of different images, whose scale differs; ``normalize="unconditional"`` subtracts
each image's unconditional error, s(c, x) = -(err(c, x) - err(null, x)), a common fix for retrieval.
"""
from __future__ import annotations

import os
from typing import Callable

import datasets
import numpy as np
import pandas as pd
from tqdm import tqdm

from .data import wino_dataset
from .errors import InputError
from .plan import Plan, even_plan
from .scoring import ScoreOptions, Scorer

#: the text score of a model that guesses: each of an item's two images picks its caption with probability 1/2
TEXT_SCORE_CHANCE = 0.25


def wino_outcomes(s: np.ndarray) -> dict:
    """s[i, j] = score of caption i for image j (2 x 2) -> text, image and group correctness."""
    text = s[0, 0] > s[1, 0] and s[1, 1] > s[0, 1]
    image = s[0, 0] > s[0, 1] and s[1, 1] > s[1, 0]
    return {"text": bool(text), "image": bool(image), "group": bool(text and image)}


def diffusion_match_scores(classifier, images, captions, plan: Plan | None = None, seed: int = 0,
                           item_id: str = "item", normalize: str | None = None, batch_size: int = 256,
                           options: ScoreOptions | None = None) -> np.ndarray:
    """[n_captions, n_images] scores -mean error; every caption of an image shares that image's samples."""
    adapter = classifier.adapter
    plan = plan or even_plan(100, adapter.num_train_timesteps)
    scorer = Scorer(adapter, options, batch_size=batch_size)
    conds = adapter.encode_conditions(list(captions))
    out = np.zeros((len(captions), len(images)))
    for j, image in enumerate(images):
        x0, _ = classifier.encode_image(image)
        errors = scorer.score_plan(x0, conds, plan, seed, f"{item_id}|{j}").errors.mean(1).numpy()
        if normalize == "unconditional":  # the same samples and noise, without the caption
            errors = errors - scorer.score_plan(x0, adapter.null_condition(), plan, seed,
                                                f"{item_id}|{j}").errors.mean().item()
        elif normalize is not None:
            raise ValueError(f"unknown normalization {normalize!r}")
        out[:, j] = -errors
    return out


def winoground_table(match: Callable[[list, list, str], np.ndarray], dataset, limit: int | None = None,
                     progress: bool = True) -> pd.DataFrame:
    """One row per item with its text / image / group outcome; ``match(images, captions, item_id)`` gives the
    2 x 2 score matrix. Columns swap_type and template_split are kept when the dataset has them."""
    n = len(dataset) if limit is None else min(limit, len(dataset))
    rows = []
    for k in tqdm(range(n), desc="winoground", disable=not progress):
        item = dataset[k]
        s = match([item["image_0"], item["image_1"]], [item["caption_0"], item["caption_1"]], str(item.get("id", k)))
        rows.append({"id": item.get("id", k), "swap_type": item.get("swap_type"),
                     "template_split": item.get("template_split"), **wino_outcomes(np.asarray(s))})
    return pd.DataFrame(rows)


def summarize_scores(table: pd.DataFrame, by=("swap_type",)) -> pd.DataFrame:
    """Percent text / image / group scores per group and overall."""
    parts = [table.groupby(list(by))[["text", "image", "group"]].mean()] if by else []
    overall = table[["text", "image", "group"]].mean().to_frame("all").T
    if by:
        overall.index = pd.MultiIndex.from_tuples([("all",) * len(by)], names=list(by)) if len(by) > 1 else \
            pd.Index(["all"], name=by[0])
    return 100 * pd.concat(parts + [overall])


def load_pairs(spec: str = "embedded:shapes-wino", split: str = "test", per_swap: int | None = None):
    """An image-caption-pair dataset in the schema :func:`winoground_table` reads (image_0, image_1,
    caption_0, caption_1, and swap_type when known).

    ``spec``: ``embedded:shapes-wino`` (the procedural pairs; ``per_swap`` pairs per swap type), a folder
    written by ``Dataset.save_to_disk``, or a Hugging Face dataset id such as ``facebook/winoground`` (gated:
    accept its terms and log in once; it is read from the local cache when offline). Winoground's ``tag``
    (object / relation / both) becomes ``swap_type``.
    """
    if spec in ("embedded:shapes-wino", "shapes-wino"):
        return wino_dataset() if per_swap is None else wino_dataset(per_swap)
    try:
        ds = datasets.load_from_disk(spec) if os.path.isdir(spec) else datasets.load_dataset(spec, split=split)
    except Exception as err:  # offline without a cache, gated without a token, a typo
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise InputError(f"cannot load image-caption pairs {spec!r}: {first}") from None
    if isinstance(ds, datasets.DatasetDict):
        if split not in ds:
            raise InputError(f"{spec!r} has no split {split!r} (splits: {', '.join(ds)})")
        ds = ds[split]
    missing = [c for c in ("image_0", "image_1", "caption_0", "caption_1") if c not in ds.column_names]
    if missing:
        raise InputError(f"{spec!r} lacks the columns {missing} (need image_0, image_1, caption_0, caption_1)")
    if "swap_type" not in ds.column_names and "tag" in ds.column_names:
        ds = ds.rename_column("tag", "swap_type")
    return ds


def compare_on_pairs(classifier, contrastive, dataset, plan: Plan | None = None, seed: int = 0,
                     normalize: str | None = None, progress: bool = True) -> dict[str, pd.DataFrame]:
    """:func:`winoground_table` of Diffusion Classifier (:func:`diffusion_match_scores` with ``plan``, ``seed``
    and ``normalize``) and of a contrastive model (its image-text similarities) on the same items:
    {"Diffusion Classifier": table, "contrastive": table}."""
    return {
        "Diffusion Classifier": winoground_table(
            lambda images, captions, item: diffusion_match_scores(classifier, images, captions, plan, seed=seed,
                                                                  item_id=item, normalize=normalize),
            dataset, progress=progress),
        "contrastive": winoground_table(lambda images, captions, item: contrastive.scores(images, captions).T,
                                        dataset, progress=progress),
    }


def summarize_models(outcomes: dict[str, pd.DataFrame], dataset) -> pd.DataFrame:
    """:func:`summarize_scores` of every model of :func:`compare_on_pairs`, stacked with a ``model`` index level
    and rounded to 0.1%: per caption-template split and swap type when ``dataset`` has template_split, else per
    swap type."""
    by = ("template_split", "swap_type") if "template_split" in dataset.column_names else ("swap_type",)
    return pd.concat({name: summarize_scores(t, by=by) for name, t in outcomes.items()}, names=["model"]).round(1)


def text_score_pairs(outcomes: dict[str, pd.DataFrame], swaps=("object", "relation", "both"),
                     model: str = "Diffusion Classifier", baseline: str = "contrastive") -> dict:
    """The paired evidence of the compositional claim: {"SWAP swaps": (model's text outcomes, baseline's)} per
    swap type of ``swaps`` that the items have, from :func:`compare_on_pairs`."""
    dc, cl = outcomes[model], outcomes[baseline]
    return {f"{swap} swaps": (dc.text[dc.swap_type == swap].to_numpy(), cl.text[cl.swap_type == swap].to_numpy())
            for swap in swaps if (dc.swap_type == swap).any()}


def describe_text_scores(outcomes: dict[str, pd.DataFrame], model: str = "Diffusion Classifier",
                         baseline: str = "contrastive") -> str:
    """"Text score, Diffusion Classifier vs contrastive: object 50.0% vs 25.0%, ..." for every swap type, in the
    items' order."""
    dc, cl = outcomes[model], outcomes[baseline]
    return f"Text score, {model} vs {baseline}: " + ", ".join(
        f"{swap} {100 * dc.text[dc.swap_type == swap].mean():.1f}% vs {100 * cl.text[cl.swap_type == swap].mean():.1f}%"
        for swap in dict.fromkeys(dc.swap_type)) + "."
