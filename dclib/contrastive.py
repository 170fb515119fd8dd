"""The contrastive baseline: a CLIP-style model scores (image, prompt) pairs by cosine similarity.

    from dclib.contrastive import ContrastiveModel
    clip = ContrastiveModel.from_pretrained("embedded:shapes-clip")
    clip.scores([image], ["a red circle", "a blue square"])     # numpy [1, 2]
    clip.classify(images, prompt_rows)                             # rows of (prompt, classname, classidx)

Images are prepared exactly as the diffusion classifier prepares them (``dclib.images.preprocess``: bicubic
resize of the shortest edge, center crop, [-1, 1]); prompts are tokenized with padding to the tokenizer's
``model_max_length``. Like Diffusion Classifier, the predicted class is the class of the best prompt.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from transformers import CLIPModel, CLIPTokenizer

from .adapters.loading import quiet_hf_logging, resolve_model_path
from .errors import InputError, ModelNotFoundError
from .images import preprocess
from .prompts import Conditionings, resolve_conditionings


def image_embeddings(model, pixels: torch.Tensor) -> torch.Tensor:
    """L2-normalised projected image embeddings [n, d] of a transformers CLIPModel (any version's outputs)."""
    pooled = model.vision_model(pixel_values=pixels.to(model.dtype)).pooler_output
    return F.normalize(model.visual_projection(pooled), dim=-1)


def text_embeddings(model, input_ids: torch.Tensor) -> torch.Tensor:
    """L2-normalised projected text embeddings [n, d] (CLIP pools the EOS token)."""
    pooled = model.text_model(input_ids=input_ids).pooler_output
    return F.normalize(model.text_projection(pooled), dim=-1)


@dataclass
class ContrastiveResult:
    """predictions[i]: class index of image i; class_scores [n_images, n_classes]: best prompt per class."""
    predictions: np.ndarray
    prediction_names: list[str]
    class_scores: np.ndarray
    scores: np.ndarray                      # [n_images, n_prompts]
    class_names: tuple[str, ...] = field(default_factory=tuple)


class ContrastiveModel:
    def __init__(self, model, tokenizer, resolution: int = 32, device: str | torch.device = "cpu",
                 batch_size: int = 256):
        self.model = model.eval().requires_grad_(False).to(device)
        self.tokenizer = tokenizer
        self.resolution = resolution
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.model_id: str | None = None

    @classmethod
    def from_pretrained(cls, model: str, device: str | torch.device = "cpu") -> "ContrastiveModel":
        """A hub id or a folder with a transformers ``CLIPModel`` (safetensors) and its tokenizer, or
        ``embedded:NAME``."""
        path = Path(resolve_model_path(model))
        local = path.is_dir() or str(model).startswith(("/", ".", "~", "embedded:"))
        if local and not (path / "config.json").exists():
            raise ModelNotFoundError(f"{model}: not a CLIPModel folder (no config.json)")
        index = path / "model_index.json"
        resolution = None
        if local and index.exists():
            resolution = json.loads(index.read_text()).get("resolution")
        source = path if local else str(model)  # a hub id: the local cache when offline
        try:
            with quiet_hf_logging():
                clip = CLIPModel.from_pretrained(source, dtype=torch.float32, use_safetensors=True)
                tokenizer = CLIPTokenizer.from_pretrained(source)
        except (OSError, ValueError) as err:
            first = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise ModelNotFoundError(f"cannot load contrastive model {model!r}: {first}") from None
        out = cls(clip, tokenizer, resolution or clip.config.vision_config.image_size, device)
        out.model_id = str(model)
        return out

    # ------------------------------------------------------------------------------------------ encoding
    def preprocess(self, images) -> torch.Tensor:
        """Paths, PIL images, uint8 arrays, or a prepared tensor [n, 3, R, R] in [-1, 1]."""
        if isinstance(images, torch.Tensor):
            return images if images.ndim == 4 else images[None]
        if isinstance(images, np.ndarray) and images.ndim == 4:
            images = list(images)
        elif not isinstance(images, (list, tuple)):
            images = [images]
        return torch.stack([preprocess(image, self.resolution, 3) for image in images])

    @torch.inference_mode()
    def encode_images(self, images) -> torch.Tensor:
        pixels = self.preprocess(images)
        return torch.cat([image_embeddings(self.model, pixels[i:i + self.batch_size].to(self.device))
                          for i in range(0, len(pixels), self.batch_size)]).float().cpu()

    @torch.inference_mode()
    def encode_text(self, prompts: Sequence[str]) -> torch.Tensor:
        prompts = [str(p) for p in prompts]
        if not prompts:
            raise InputError("no prompts given")
        ids = self.tokenizer(prompts, padding="max_length", max_length=self.tokenizer.model_max_length,
                             truncation=True, return_tensors="pt").input_ids
        return torch.cat([text_embeddings(self.model, ids[i:i + self.batch_size].to(self.device))
                          for i in range(0, len(ids), self.batch_size)]).float().cpu()

    @property
    def logit_scale(self) -> float:
        return float(self.model.logit_scale.detach().exp())

    # ------------------------------------------------------------------------------------------ scoring
    def scores(self, images, prompts: Sequence[str]) -> np.ndarray:
        """Cosine similarity x logit scale, numpy [n_images, n_prompts] (higher = better match)."""
        return (self.logit_scale * self.encode_images(images) @ self.encode_text(prompts).T).numpy()

    def classify(self, images, prompt_rows) -> ContrastiveResult:
        """prompt_rows: (prompt, classname, classidx) rows, a prompt file, a list of prompts (one class each)
        or a :class:`dclib.prompts.Conditionings`. Prediction = class of the best-scoring prompt."""
        if isinstance(prompt_rows, (list, tuple)) and prompt_rows and isinstance(prompt_rows[0], (list, tuple)):
            conds = Conditionings.from_rows([(str(p), str(n), int(i)) for p, n, i in prompt_rows])
        else:
            conds = resolve_conditionings(prompt_rows)
        s = self.scores(images, list(conds.values))
        idx = np.asarray(conds.class_idx)
        class_scores = np.full((len(s), conds.n_classes), -np.inf)
        for k in range(conds.n_classes):
            if (idx == k).any():
                class_scores[:, k] = s[:, idx == k].max(1)
        predictions = idx[s.argmax(1)]
        return ContrastiveResult(predictions=predictions,
                                 prediction_names=[conds.class_names[p] for p in predictions],
                                 class_scores=class_scores, scores=s, class_names=conds.class_names)
