"""The contrastive baselines: ``train_shapes_clip`` builds ``embedded:shapes-clip`` and ``embedded:manyclass-clip``
(``CLIP_RECIPES``), transformers ``CLIPModel``s trained with a symmetric InfoNCE loss (several positives, hard
negatives) on their text-to-image model's pictures; each world (``ClipRecipe.world``) has its objective."""
from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np
import torch

from ..contrastive import image_embeddings, text_embeddings
from ..data import captions as cap
from ..data import manyclass
from .common import EMA, bf16_autocast, count_parameters, folder_size_mb, start_training, write_card
from .loop import StepLoss, train_loop
from .scenes import caption_truth, hard_negatives, swap_scene
from .shapes_models import build_clip, save_clip, use_fast_cpu_attention
from .shapes_recipes import ClipRecipe
from .tokenizer import build_word_tokenizer, tokenize
from .worlds import world_of


def multi_positive_nce(logits: torch.Tensor, positive: torch.Tensor) -> torch.Tensor:
    """-log sum_{j positive} softmax(logits_i)_j, averaged over rows (InfoNCE with several true captions)."""
    pos = logits.masked_fill(~positive, float("-inf")).logsumexp(-1)
    return (logits.logsumexp(-1) - pos).mean()


def _clip_features(model, pixels, ids):
    return image_embeddings(model, pixels), text_embeddings(model, ids)


def contrastive_step(model, recipe: ClipRecipe, pixels: torch.Tensor, ids: torch.Tensor, truth: torch.Tensor
                     ) -> StepLoss:
    """The symmetric multi-positive InfoNCE of one batch: ``pixels`` of b pictures, the token ``ids`` of their b own
    captions followed by any hard negatives, ``truth`` [b, captions] which caption describes which picture."""
    b = len(pixels)
    with bf16_autocast(recipe.bf16):
        img, txt = _clip_features(model, pixels, ids)
    logits = model.logit_scale.exp() * (img.float() @ txt.float().T)
    # image -> text over all captions (incl. hard negatives); text -> image over the batch's own captions
    loss = 0.5 * (multi_positive_nce(logits, truth) + multi_positive_nce(logits[:, :b].T, truth[:, :b].T))
    return StepLoss(loss, loss.item())


class Objective(NamedTuple):
    """What a world gives the contrastive loop: a step's loss, the validation metrics, the progress bar's fields."""
    step_loss: Callable[[int], StepLoss]
    evaluate: Callable[..., dict]
    describe: Callable[[dict], dict]
    val_keys: tuple[str, ...]
    n_neg: list               # hard negatives added per batch, filled as training runs


def scene_objective(recipe: ClipRecipe, pool, val, tokenizer, model, gen, rng) -> Objective:
    """The shapes world: scenes of one or two objects; a caption is true of every scene it describes
    (:func:`caption_truth`); hard negatives are a two-object scene's captions with colours, objects or shapes
    exchanged."""
    # validation: image->caption top-1 among the val captions (TRAIN wording), and binding: does the true
    # caption beat its colour-swapped version (TRAIN and HELD-OUT wording) on two-object scenes
    vrng = np.random.default_rng(recipe.seed + 1)
    val_idx = np.arange(len(val))
    val_pixels = val.pixels(val_idx)
    val_texts, val_temps = val.captions(val_idx, vrng, "train")
    val_truth = torch.from_numpy(caption_truth(val.scenes, val.scenes, val_temps))
    swap_sets = {}
    for split in ("train", "heldout"):
        pos, neg = [], []
        for scene in val.scenes:
            if scene["n_objects"] == 2 and scene["colour1"] != scene["colour2"] and scene["shape1"] != scene["shape2"]:
                options = val.fitting(scene, split)
                template = options[int(vrng.integers(len(options)))]
                pos.append(cap.caption(scene, template))
                neg.append(cap.caption(swap_scene(scene, "attribute"), template))
        swap_sets[split] = (np.array([i for i, s in enumerate(val.scenes) if s["n_objects"] == 2
                                      and s["colour1"] != s["colour2"] and s["shape1"] != s["shape2"]]),
                            tokenize(tokenizer, pos), tokenize(tokenizer, neg))
    val_ids = tokenize(tokenizer, val_texts)

    @torch.inference_mode()
    def evaluate(m, step: int) -> dict:
        m.eval()
        img, txt = _clip_features(m, val_pixels, val_ids)
        top = (img @ txt.T).argmax(-1)
        res = {"i2t_top1": float(val_truth[torch.arange(len(top)), top].float().mean())}
        for split, (rows, pos, neg) in swap_sets.items():
            tp, tn = text_embeddings(m, pos), text_embeddings(m, neg)
            res[f"colour_swap_{split}"] = float(((img[rows] * tp).sum(-1) > (img[rows] * tn).sum(-1)).float().mean())
        return {"logit_scale": model.logit_scale.exp().item(), **{k: round(x, 4) for k, x in res.items()}}

    n_neg = []

    def step_loss(step: int) -> StepLoss:
        idx = torch.randint(0, len(pool), (recipe.batch_size,), generator=gen).numpy()
        texts, temps = pool.captions(idx, rng)
        scenes = [pool.scenes[i] for i in idx]
        cap_scenes, cap_temps = list(scenes), list(temps)
        if recipe.hard_negatives:
            neg_texts, neg_scenes, neg_temps = hard_negatives(scenes, temps, rng, recipe.hard_negatives)
            texts, cap_scenes, cap_temps = texts + neg_texts, cap_scenes + neg_scenes, cap_temps + neg_temps
            n_neg.append(len(neg_texts))
        truth = torch.from_numpy(caption_truth(scenes, cap_scenes, cap_temps))
        return contrastive_step(model, recipe, pool.pixels(idx), tokenize(tokenizer, texts), truth)

    return Objective(step_loss, evaluate,
                     lambda row: {"loss": f"{row['train_loss']:.3f}", "i2t": f"{row['i2t_top1']:.2f}",
                                  "swap": f"{row['colour_swap_train']:.2f}/{row['colour_swap_heldout']:.2f}"},
                     ("i2t_top1", "colour_swap_train", "colour_swap_heldout"), n_neg)


def attribute_truth(attributes: np.ndarray, labels, caption_labels, named) -> np.ndarray:
    """[pictures, captions] bool: caption j (of class ``caption_labels[j]``, naming the attributes ``named[j]``) is
    true of picture i (of class ``labels[i]``) iff the two classes agree on every attribute the caption names.
    ``attributes[class]`` holds the class's value index per ``manyclass.ATTRIBUTES``."""
    shown = np.array([[a in names for a in manyclass.ATTRIBUTES] for names in named], bool).reshape(-1, 3)
    same = attributes[np.asarray(labels)][:, None, :] == attributes[np.asarray(caption_labels)][None, :, :]
    return (same | ~shown[None]).all(-1)


def class_objective(recipe: ClipRecipe, pool, val, tokenizer, model, gen, rng) -> Objective:
    """The many-class world: a caption is true of every picture that has each attribute it names (the full wording
    names colour, pattern and shape: one class; "a red circle" any pattern). Hard negatives: for each picture,
    captions of classes one named attribute away from its own (same template), the near neighbours a many-class
    classifier confuses. Validation: zero-shot top-1 among every class's caption in TRAIN and in HELD-OUT wording
    (the classifier's task)."""
    classes = list(manyclass.CLASSES)
    index = {name: k for k, name in enumerate(classes)}
    attributes = np.array([manyclass.attribute_indices(name) for name in classes])  # [classes, 3]
    neighbours = [[(index[n], changed) for n, changed in manyclass.neighbour_classes(name)] for name in classes]
    val_pixels = val.pixels(np.arange(len(val)))
    val_labels = torch.tensor(np.asarray(val.labels))
    class_ids = {split: tokenize(tokenizer, [manyclass.caption(name, template) for name in classes])
                 for split, template in (("train", manyclass.TRAIN_TEMPLATES[0]), ("heldout", manyclass.PROMPT_TEMPLATE))}

    @torch.inference_mode()
    def evaluate(m, step: int) -> dict:
        m.eval()
        img = image_embeddings(m, val_pixels)
        res = {f"top1_{split}": float(((img @ text_embeddings(m, ids).T).argmax(-1) == val_labels).float().mean())
               for split, ids in class_ids.items()}
        return {"logit_scale": model.logit_scale.exp().item(), **{k: round(x, 4) for k, x in res.items()}}

    n_neg = []

    def step_loss(step: int) -> StepLoss:
        idx = torch.randint(0, len(pool), (recipe.batch_size,), generator=gen).numpy()
        texts, temps = pool.captions(idx, rng)
        labels = [int(pool.labels[i]) for i in idx]
        caption_labels, named = list(labels), [manyclass.named_attributes(t) for t in temps]
        for label, template, names in zip(labels, temps, list(named)):
            options = [k for k, changed in neighbours[label] if changed in names]  # a change the caption shows
            for k in rng.permutation(options)[:recipe.hard_negatives].tolist():
                texts.append(manyclass.caption(classes[k], template))
                caption_labels.append(k)
                named.append(names)
        n_neg.append(len(caption_labels) - len(labels))
        truth = torch.from_numpy(attribute_truth(attributes, labels, caption_labels, named))
        return contrastive_step(model, recipe, pool.pixels(idx), tokenize(tokenizer, texts), truth)

    return Objective(step_loss, evaluate,
                     lambda row: {"loss": f"{row['train_loss']:.3f}", "top1": f"{row['top1_heldout']:.2f}"},
                     ("top1_train", "top1_heldout"), n_neg)


#: each world's contrastive objective (``ClipRecipe.world``)
OBJECTIVES = {"shapes": scene_objective, "manyclass": class_objective}


def train_shapes_clip(out: Path, steps: int | None = None, progress: bool = True,
                      recipe: ClipRecipe | None = None) -> dict:
    """Train a contrastive model into ``out`` (CLIPModel + tokenizer, safetensors): ``embedded:shapes-clip`` by
    default, any of ``CLIP_RECIPES`` by its recipe (the world picks the objective); returns the facts."""
    recipe = recipe or ClipRecipe()
    if recipe.world not in OBJECTIVES:  # before any data is rendered
        raise ValueError(f"no contrastive objective for world {recipe.world!r}; valid: {', '.join(OBJECTIVES)}")
    out, steps, gen, rng, started = start_training(out, recipe, steps)
    world = world_of(recipe)
    pool, val = world.pools(recipe.n_scenes, recipe.n_val, hard_pictures=recipe.hard_pictures)
    tokenizer = build_word_tokenizer(world.words(), model_max_length=recipe.max_length)
    model = build_clip(recipe, tokenizer).train()
    use_fast_cpu_attention(model)
    ema = EMA(model, recipe.ema_decay)
    opt = recipe.adamw(model)
    max_scale = float(np.log(100.0))

    objective = OBJECTIVES[recipe.world](recipe, pool, val, tokenizer, model, gen, rng)

    def clamp_temperature() -> None:  # CLIP's cap: temperature at most 100
        with torch.no_grad():
            model.logit_scale.clamp_(0.0, max_scale)

    t_train = time.perf_counter()
    history = train_loop(
        model, opt, objective.step_loss, steps, lr=recipe.lr, warmup=recipe.warmup, grad_clip=recipe.grad_clip,
        ema=ema, after_step=clamp_temperature, evaluate=objective.evaluate, eval_every=recipe.eval_every,
        describe=objective.describe, desc=f"train {recipe.name}", progress=progress).history
    train_seconds = time.perf_counter() - t_train
    save_clip(ema.model, tokenizer, out, recipe)
    final = history[-1] if history else {}
    facts = {
        "model": f"embedded:{recipe.name}",
        "recipe": asdict(recipe),
        "steps_run": steps,
        "parameters": {"vision": count_parameters(model.vision_model, model.visual_projection),
                       "text": count_parameters(model.text_model, model.text_projection),
                       "total": count_parameters(model)},
        "vocab_size": len(tokenizer),
        "train_images": len(pool),
        "mean_hard_negatives_per_batch": round(float(np.mean(objective.n_neg)), 1) if objective.n_neg else 0,
        "train_seconds": round(time.perf_counter() - started, 1),
        "loop_seconds": round(train_seconds, 1),
        "final_train_loss": final.get("train_loss"),
        "final_logit_scale": final.get("logit_scale"),
        "final_val": {k: final.get(k) for k in objective.val_keys},
        "history": history,
    }
    facts["size_mb"] = round(folder_size_mb(out), 2)
    card = CLIP_CARD if recipe.world == "shapes" else MANYCLASS_CLIP_CARD
    write_card(out, f"embedded:{recipe.name}", facts, card.format(**asdict(recipe), steps_run=steps))
    facts["size_mb"] = round(folder_size_mb(out), 2)
    return facts


CLIP_CARD = """
The contrastive baseline for `embedded:shapes` (`dclib.train.shapes.train_shapes_clip`): a transformers
`CLIPModel` trained from scratch on CPU. Load it with `dclib.contrastive.ContrastiveModel.from_pretrained`
(`model_index.json` here is only a marker so `embedded:shapes-clip` resolves).

- Data: the same {n_scenes} `embedded:shapes-train` scenes and random TRAIN-template captions as `embedded:shapes`
  (no augmentation); images in [-1, 1] exactly as `dclib.images.preprocess(image, 32, 3)` prepares them.
- Vision tower: ViT, {patch_size}x{patch_size} patches of 32x32 images, hidden {vision_hidden}, {vision_layers} layers.
  Text tower: the same size as the diffusion model's text encoder (hidden {text_hidden}, {text_layers} layers,
  {text_heads} heads) and the same tokenizer. Projection {projection_dim}; learnable temperature (CLIP's
  init, clamped at 100).
- Loss: symmetric InfoNCE over batches of {batch_size}, with several positives where a caption is true of several
  images in the batch (e.g. "a red circle" of every one-object red-circle scene), so true matches are never
  pushed apart. Hard negatives: for every two-object scene, up to {hard_negatives} of its captions with colours
  exchanged, objects exchanged or shapes exchanged (same template; only swaps that make the caption false of
  the scene), drawn at random, are added as extra captions on the image -> text side.
- {steps_run} steps, AdamW lr {lr} ({warmup} warm-up, cosine), weight decay {weight_decay}, grad clip {grad_clip},
  bf16 autocast = {bf16}, EMA {ema_decay} (the shipped weights), fp16 on disk.
- Validation on other scenes: `i2t_top1` (image -> caption retrieval among val captions, TRAIN wording),
  `colour_swap_train` / `colour_swap_heldout` (true caption scores above its colour-swapped version).
"""


MANYCLASS_CLIP_CARD = """
The contrastive partner of `embedded:manyclass` (`dclib.train.shapes.train_shapes_clip` with
`CLIP_RECIPES["manyclass-clip"]`): a transformers `CLIPModel` trained from scratch on CPU, for top-k pre-pruning
and as the many-class benchmark's contrastive baseline. Load it with
`dclib.contrastive.ContrastiveModel.from_pretrained("embedded:manyclass-clip")`.

- Data: the same {n_scenes} `embedded:manyclass-train` drawings and random TRAIN-template captions as
  `embedded:manyclass`; images in [-1, 1] as `dclib.images.preprocess(image, 32, 3)` prepares them.
  Hard pictures = {hard_pictures}: when true, every training and validation picture is made harder as the
  test and dev pictures are (`manyclass.EVALUATION_NUISANCE`: shrunk, faded, noised; the same ranges, each
  picture's own draws), since a partner trained on clean pictures alone kept the true class among its top 10
  for only 72% of the 200-class test pictures. The text-to-image model trains on the clean pictures.
- Vision tower: ViT, {patch_size}x{patch_size} patches of 32x32 images, hidden {vision_hidden}, {vision_layers} layers.
  Text tower: hidden {text_hidden}, {text_layers} layers, {text_heads} heads, one token per caption word. Projection
  {projection_dim}; learnable temperature (CLIP's init, clamped at 100).
- Loss: symmetric InfoNCE over batches of {batch_size}; a caption is true of every picture with each attribute it
  names ("a red circle" of a red circle of any pattern), so true matches are never pushed apart. Hard negatives:
  up to {hard_negatives} captions per picture of classes one named attribute away (same template).
- {steps_run} steps, AdamW lr {lr} ({warmup} warm-up, cosine), weight decay {weight_decay}, grad clip {grad_clip},
  bf16 autocast = {bf16}, EMA {ema_decay} (the shipped weights), fp16 on disk.
- Validation on other pictures (hard ones with hard pictures): `top1_train` / `top1_heldout`, zero-shot top-1
  among all 256 classes' captions in TRAIN and HELD-OUT wording.
"""
