"""Discriminative classifiers trained on the same splits as the embedded diffusion models (Table 4 analogue).

Logistic regression and an MLP (scikit-learn) and a small CNN (torch), each from a fixed seed, on pixels
prepared exactly as the diffusion classifier prepares them.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .images import resize_center_crop, to_tensor


def prepare(images, resolution: int, channels: int = 1) -> np.ndarray:
    """uint8 arrays or PIL images -> float32 [n, C, R, R] in [-1, 1] (the classifier's preprocessing)."""
    out = []
    for image in images:
        pil = image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image))
        out.append(to_tensor(resize_center_crop(pil, resolution), channels).numpy())
    return np.stack(out)


class SmallCNN(torch.nn.Module):
    def __init__(self, channels: int, n_classes: int, width: int = 32):
        super().__init__()
        self.body = torch.nn.Sequential(
            torch.nn.Conv2d(channels, width, 3, padding=1), torch.nn.ReLU(),
            torch.nn.Conv2d(width, width, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
            torch.nn.Conv2d(width, 2 * width, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(2),
            torch.nn.Flatten(), torch.nn.Dropout(0.2), torch.nn.Linear(8 * width, n_classes))

    def forward(self, x):
        return self.body(x)


@dataclass
class CNNClassifier:
    """A small CNN with an sklearn-like fit/predict."""

    epochs: int = 30
    batch_size: int = 64
    lr: float = 2e-3
    seed: int = 0
    width: int = 32
    model: SmallCNN | None = None

    def fit(self, x: np.ndarray, y: np.ndarray) -> "CNNClassifier":
        gen = torch.Generator().manual_seed(self.seed)
        torch.manual_seed(self.seed)
        self.model = SmallCNN(x.shape[1], int(y.max()) + 1, self.width)
        opt = torch.optim.AdamW(self.model.parameters(), lr=self.lr, weight_decay=1e-4)
        xt, yt = torch.from_numpy(np.array(x, dtype=np.float32)), torch.from_numpy(np.array(y, dtype=np.int64))
        steps = self.epochs * int(np.ceil(len(x) / self.batch_size))
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, self.lr, total_steps=steps)
        self.model.train()
        for _ in range(self.epochs):
            perm = torch.randperm(len(x), generator=gen)
            for i in range(0, len(x), self.batch_size):
                idx = perm[i:i + self.batch_size]
                loss = F.cross_entropy(self.model(xt[idx]), yt[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
        self.model.eval()
        return self

    @torch.inference_mode()
    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        return torch.softmax(self.model(torch.from_numpy(x)), 1).numpy()

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.predict_proba(x).argmax(1)


def make_baselines(seed: int = 0, cnn_epochs: int = 30) -> dict:
    """The three discriminative baselines of the book's "same training data" comparison, unfitted."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier

    return {
        "logistic regression": _Flat(LogisticRegression(max_iter=3000, C=0.5)),
        "MLP (256)": _Flat(MLPClassifier(hidden_layer_sizes=(256,), max_iter=400, random_state=seed)),
        "small CNN": CNNClassifier(epochs=cnn_epochs, seed=seed),
    }


@dataclass
class _Flat:
    """Adapts an sklearn estimator to image arrays [n, C, H, W]."""

    estimator: object

    def fit(self, x, y):
        self.estimator.fit(x.reshape(len(x), -1), y)
        return self

    def predict(self, x):
        return self.estimator.predict(x.reshape(len(x), -1))

    def predict_proba(self, x):
        return self.estimator.predict_proba(x.reshape(len(x), -1))


def make_baseline_family(seed: int = 0, cnn_epochs: int = 30) -> dict:
    """A population of discriminative models of varied capacity, for the effective-robustness line of Fig. 6
    (the paper fits it through many ImageNet classifiers)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier

    family = {f"logistic regression C={c}": _Flat(LogisticRegression(max_iter=3000, C=c)) for c in (0.01, 0.1, 1.0)}
    for width in (64, 256):
        family[f"MLP ({width})"] = _Flat(MLPClassifier(hidden_layer_sizes=(width,), max_iter=400, random_state=seed))
    for width in (8, 32):
        family[f"CNN (width {width})"] = CNNClassifier(epochs=cnn_epochs, seed=seed, width=width)
    return family
