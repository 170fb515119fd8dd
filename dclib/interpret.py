"""Seeing what the model believes (Appendix D, Fig. 7): DDIM inversion and reconstruction under each candidate.

For a candidate conditioning c, the image is mapped deterministically (DDIM, eta = 0) from x0 up to timestep
``t_start`` under c, then brought back to t = 0 under the same c. Every candidate gets the same timesteps, so
the reconstructions differ only through the conditioning; the paper's intuition is that the correct class
reconstructs the image's class-descriptive features better than incorrect ones. :func:`round_trips` runs this
for one image, :func:`reconstruct_dataset` for many, measuring each reconstruction's distance to the input.

No label enters the procedure: the true class is only looked up when the distances are read. (Inverting under
the true class and reconstructing under each class would make the true class a plain round trip, closest by
construction.)
"""
from __future__ import annotations

import textwrap
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from .errors import InputError
from .runs import select_indices


def ddim_timesteps(t_start: int, n_steps: int, num_train_timesteps: int = 1000) -> list[int]:
    """Increasing timesteps 0, ..., t_start used by the inversion (and, reversed, the reconstruction)."""
    ts = sorted({int(round(v)) for v in np.linspace(0, t_start, n_steps + 1)})
    return [t for t in ts if 0 <= t < num_train_timesteps]


def _check_schedule(adapter) -> None:
    if adapter.alphas_cumprod is None:
        raise InputError(f"DDIM inversion needs a diffusion (abar) schedule; {type(adapter).__name__} is a "
                         "flow-matching model")


@torch.inference_mode()
def _ddim_step(adapter, x, t_from: int, t_to: int, cond: torch.Tensor) -> torch.Tensor:
    """One deterministic DDIM move of every row from t_from to t_to (up: inversion, down: sampling), each row
    under its own conditioning (``cond`` has one row per row of x, or a single row shared by all)."""
    abar = adapter.alphas_cumprod.to(x.device)
    a_from, a_to = abar[t_from], abar[t_to]
    t = torch.full((len(x),), t_from, dtype=torch.long, device=x.device)
    eps, _ = adapter.predict(x, t, cond.expand(len(x), *cond.shape[1:]))
    x0 = (x - (1 - a_from).sqrt() * eps) / a_from.sqrt()
    return a_to.sqrt() * x0 + (1 - a_to).sqrt() * eps


def _invert(adapter, x: torch.Tensor, cond: torch.Tensor, ts: list[int]) -> torch.Tensor:
    for t_from, t_to in zip(ts[:-1], ts[1:]):
        x = _ddim_step(adapter, x, t_from, t_to, cond)
    return x


def _reconstruct(adapter, x: torch.Tensor, cond: torch.Tensor, ts: list[int]) -> torch.Tensor:
    # Back down to t = ts[0] = 0, where the inversion treated x0 as the sample: the round trip ends in the
    # space it started from, so an exact inversion returns x0 itself.
    return _invert(adapter, x, cond, ts[::-1])


@torch.inference_mode()
def round_trips(adapter, x0: torch.Tensor, candidates, t_start: int = 500, n_steps: int = 25
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Fig. 7's procedure: each candidate inverts x0 to ``t_start`` and reconstructs it, under itself.

    ``x0`` is one image [C, H, W] or a batch [B, C, H, W]. Returns (inverted, reconstructions), each
    [K, C, H, W] for the K candidates in order ([B, K, C, H, W] for a batch)."""
    _check_schedule(adapter)
    ts = ddim_timesteps(t_start, n_steps, adapter.num_train_timesteps)
    batch = x0.to(adapter.device, torch.float32)
    single = batch.dim() == 3
    batch = batch[None] if single else batch
    conds = adapter.encode_conditions(list(candidates))
    b, k = len(batch), len(conds)
    # Row (i, j) of one big batch carries image i under candidate j through both legs: one denoiser call per
    # step for everything, and rows enough for the row-parallel CPU path.
    x = batch[:, None].expand(b, k, *batch.shape[1:]).reshape(b * k, *batch.shape[1:])
    conds = conds.repeat(b, *([1] * (conds.dim() - 1)))
    inverted = _invert(adapter, x, conds, ts)
    recon = _reconstruct(adapter, inverted, conds, ts)
    shape = (k, *batch.shape[1:]) if single else (b, k, *batch.shape[1:])
    return inverted.reshape(shape).cpu(), recon.reshape(shape).cpu()


@torch.inference_mode()
def invert_and_reconstruct(adapter, x0: torch.Tensor, invert_with, reconstruct_with, t_start: int = 500,
                           n_steps: int = 25) -> tuple[torch.Tensor, torch.Tensor]:
    """Invert under one conditioning, reconstruct under each of others: what each class draws from the same
    noise. Not a test of which class explains the image (``invert_with`` gets a plain round trip); for that
    see :func:`round_trips`. Returns (inverted [C, H, W], reconstructions [len(reconstruct_with), C, H, W])."""
    _check_schedule(adapter)
    ts = ddim_timesteps(t_start, n_steps, adapter.num_train_timesteps)
    inverted = _invert(adapter, x0.to(adapter.device, torch.float32)[None], adapter.encode_conditions([invert_with]),
                       ts)
    conds = adapter.encode_conditions(list(reconstruct_with))
    recon = _reconstruct(adapter, inverted.expand(len(conds), *x0.shape).clone(), conds, ts)
    return inverted[0].cpu(), recon.cpu()


def distances(x0: torch.Tensor, recon: torch.Tensor) -> np.ndarray:
    """Mean squared distance of each reconstruction [K, ...] to the input, in the model's sample space."""
    return ((recon.float() - x0.float()[None]) ** 2).flatten(1).mean(1).numpy()


@dataclass
class Reconstructions:
    """Distances of every candidate's round trip to its input, for a set of images."""
    distances: np.ndarray  # [n_images, n_candidates]
    labels: np.ndarray  # [n_images], read from the dataset after the round trips
    class_idx: np.ndarray  # [n_candidates]: the class each candidate stands for
    class_names: tuple[str, ...]
    ids: list[str]
    settings: dict
    examples: list = field(default_factory=list)  # (x0, reconstructions) of the first images, for figures

    @property
    def classes(self) -> np.ndarray:
        """The candidate classes, sorted (a class may have several prompts)."""
        return np.unique(self.class_idx)

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    def class_distances(self) -> np.ndarray:
        """[n_images, n_classes]: each class's best candidate (its closest prompt)."""
        return np.stack([self.distances[:, self.class_idx == c].min(1) for c in self.classes], axis=1)

    def closest(self) -> np.ndarray:
        """The class whose reconstruction is closest to each image."""
        return self.classes[self.class_distances().argmin(1)]

    def true_rank(self) -> np.ndarray:
        """Per image, the true class's place among the candidate classes by distance (1 = closest). A tie
        ranks it below the class it ties with, so a model that reconstructs every class equally well never
        gets rank 1, rather than getting it 1 / n_classes of the time by the order of the candidates."""
        d = self.class_distances()
        true = self.labels[:, None] == self.classes[None]
        own = d[true][:, None]
        return 1 + ((d <= own) & ~true).sum(1)

    def true_closest(self) -> np.ndarray:
        """Per image: the true class's reconstruction is strictly the closest."""
        return self.true_rank() == 1

    def figure(self, adapter, title: str = ""):
        """:func:`grid_figure` of the examples kept, the true class marked."""
        names = [self.class_names[c] for c in self.class_idx]
        true_names = [self.class_names[label] for label in self.labels[:len(self.examples)]]
        return grid_figure(adapter, self.examples, names, true_names, title)

    def table(self) -> pd.DataFrame:
        """One row per (image, candidate): distance and its rank among the image's candidates (1 = closest)."""
        ranks = self.distances.argsort(1).argsort(1) + 1
        rows = [{"image": image_id, "label": int(label), "candidate": self.class_names[c], "class": int(c),
                 "distance": float(self.distances[i, k]), "rank": int(ranks[i, k])}
                for i, (image_id, label) in enumerate(zip(self.ids, self.labels))
                for k, c in enumerate(self.class_idx)]
        return pd.DataFrame(rows)


def reconstruct_dataset(classifier, dataset, conditionings=None, n_images: int | None = None, seed: int = 0,
                        t_start: int = 500, n_steps: int = 25, n_examples: int = 3, label_column: str = "label",
                        batch_rows: int = 128, progress: bool = True) -> Reconstructions:
    """:func:`round_trips` for ``n_images`` rows drawn at random with ``seed`` (all rows if None) among those whose
    label is a candidate class. ``conditionings``: all classes by default, or a subset (Conditionings). Images
    go through the denoiser together, about ``batch_rows`` (image, candidate) rows per call."""
    conds = conditionings or classifier.conditionings()
    class_idx = np.array(conds.class_idx)
    # Images of classes that are not candidates could never be a hit; the label picks rows, never a conditioning.
    candidates = set(class_idx.tolist())
    eligible = [i for i, label in enumerate(dataset[label_column]) if label in candidates]
    if not eligible:
        raise InputError("no image's label is among the candidate classes")
    n = len(eligible) if n_images is None else min(n_images, len(eligible))
    rows = [eligible[i] for i in select_indices(len(eligible), n, seed)]
    per_call = max(1, batch_rows // len(conds))
    dists, labels, ids, examples = [], [], [], []
    for start in tqdm(range(0, len(rows), per_call), desc="round trips", disable=not progress):
        chunk = [dataset[i] for i in rows[start:start + per_call]]
        x0 = torch.stack([classifier.encode_image(row["image"])[0] for row in chunk])
        _, recon = round_trips(classifier.adapter, x0, conds.values, t_start, n_steps)
        for j, (i, row) in enumerate(zip(rows[start:start + per_call], chunk)):
            dists.append(distances(x0[j], recon[j]))
            labels.append(int(row[label_column]))  # read only now, to score the distances
            ids.append(str(row.get("id", i)))
            if len(examples) < n_examples:
                examples.append((x0[j], recon[j]))
    return Reconstructions(np.stack(dists), np.array(labels), class_idx, tuple(conds.class_names), ids,
                           {"t_start": t_start, "n_steps": n_steps, "seed": seed, "rows": rows}, examples)


def to_image(adapter, x: torch.Tensor) -> np.ndarray:
    """A clean sample (pixel or latent) -> uint8 image array [H, W] or [H, W, 3]."""
    pixels = adapter.decode(x[None].to(adapter.device))[0] if hasattr(adapter, "decode") else x
    array = ((pixels.clamp(-1, 1) + 1) * 127.5).round().byte().cpu().numpy()
    return array[0] if array.shape[0] == 1 else array.transpose(1, 2, 0)


def grid_figure(adapter, panels, names, true_names=None, title: str = ""):
    """Input and each candidate's reconstruction (top) with its squared-error map (bottom), for each image.

    ``panels``: (x0, reconstructions [K, ...]) per image; ``names``: the K candidates' titles; ``true_names``:
    per image, the candidate title to mark as the true class (green), if known."""
    import matplotlib.pyplot as plt  # local: pyplot picks a backend on import; only drawing needs it

    k = len(names)
    fig, axes = plt.subplots(2 * len(panels), k + 1, figsize=(1.2 * (k + 1), 2.6 * len(panels)), squeeze=False,
                             layout="constrained")
    gray = {"cmap": "gray"} if adapter.image_channels == 1 else {}
    for p, (x0, recon) in enumerate(panels):
        top, bottom = axes[2 * p], axes[2 * p + 1]
        top[0].imshow(to_image(adapter, x0), **gray)
        top[0].set_title("input", fontsize=8)
        bottom[0].axis("off")
        errors = distances(x0, recon)
        for j, name in enumerate(names, start=1):
            true = true_names is not None and name == true_names[p]
            top[j].imshow(to_image(adapter, recon[j - 1]), **gray)
            top[j].set_title(f"{str(name)[:14]}\n{errors[j - 1]:.3g}", fontsize=7,
                             color="C2" if true else "black", fontweight="bold" if true else "normal")
            bottom[j].imshow(((recon[j - 1] - x0) ** 2).mean(0), cmap="magma", vmin=0, vmax=1)
        for ax in list(top) + list(bottom):
            ax.set_xticks([]), ax.set_yticks([])
        bottom[1].set_ylabel("error map", fontsize=7)
    if title:  # wrapped to the figure's width, which grows with the number of candidates
        fig.suptitle(textwrap.fill(title, 18 * (k + 1)), fontsize=9)
    return fig
