"""Discriminative image classifiers from the hub or a local folder (transformers'
``AutoModelForImageClassification``): the family Table 4 and Fig. 6 compare Diffusion Classifier with, ResNets and
ViTs trained on the same ImageNet labels.

    from dclib.discriminative import ImageClassifier
    resnet = ImageClassifier.from_pretrained("microsoft/resnet-50")
    resnet.logits(images)        # numpy [n_images, n_classes], columns in resnet.class_names order

Each model sees images through its own image processor (its resize, crop and normalisation), as it was trained
and evaluated. Weights load from safetensors only, and never with remote code.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import AutoImageProcessor, AutoModelForImageClassification

from .adapters.loading import quiet_hf_logging, resolve_device, resolve_dtype
from .errors import ModelNotFoundError


class ImageClassifier:
    def __init__(self, model, processor, device: str | torch.device = "cpu", batch_size: int = 64):
        self.model = model.eval().requires_grad_(False).to(device)
        self.processor = processor
        self.device = torch.device(device)
        self.batch_size = int(batch_size)
        self.model_id: str | None = None
        labels = model.config.id2label
        self.class_names = [str(labels.get(i, labels.get(str(i), i))) for i in range(model.config.num_labels)]

    @classmethod
    def from_pretrained(cls, model: str, device: str | None = "auto", dtype: str | None = "float32",
                        batch_size: int = 64) -> "ImageClassifier":
        """A hub id (the local cache when offline) or a folder with a transformers image-classification model
        (config.json, safetensors weights) and its image processor."""
        source = str(model)
        folder = Path(source).expanduser()
        if folder.is_dir() or source.startswith(("/", ".", "~")):
            if not (folder / "config.json").exists():
                raise ModelNotFoundError(f"{model}: not an image-classification model folder (no config.json)")
            source = str(folder)
        try:
            with quiet_hf_logging():
                net = AutoModelForImageClassification.from_pretrained(source, dtype=resolve_dtype(dtype),
                                                                      use_safetensors=True)
                processor = AutoImageProcessor.from_pretrained(source)
        except (OSError, ValueError) as err:
            first = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise ModelNotFoundError(f"cannot load image classifier {model!r}: {first}") from None
        out = cls(net, processor, resolve_device(device), batch_size)
        out.model_id = str(model)
        return out

    @torch.inference_mode()
    def logits(self, images: Iterable, progress: bool = False) -> np.ndarray:
        """Logits [n_images, n_classes] of PIL images (converted to RGB), read lazily and run in batches of
        ``batch_size``."""
        out, batch = [], []
        for image in tqdm(images, desc=self.model_id or "classifier", disable=not progress, leave=False):
            batch.append(image.convert("RGB"))
            if len(batch) == self.batch_size:
                out.append(self._logits(batch))
                batch = []
        if batch:
            out.append(self._logits(batch))
        return torch.cat(out).numpy() if out else np.zeros((0, len(self.class_names)), np.float32)

    def _logits(self, batch: list) -> torch.Tensor:
        pixels = self.processor(images=batch, return_tensors="pt").pixel_values
        return self.model(pixel_values=pixels.to(self.device, self.model.dtype)).logits.float().cpu()
