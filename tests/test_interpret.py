"""DDIM inversion and reconstruction under each candidate (Appendix D, Fig. 7)."""
import numpy as np
import pytest
import torch
from datasets import Dataset

from dclib import DiffusionClassifier
from dclib.errors import InputError
from dclib.interpret import (Reconstructions, ddim_timesteps, invert_and_reconstruct, reconstruct_dataset,
                             round_trips, to_image)
from dclib.prompts import Conditionings
from fakes import LinearAdapter

X0 = torch.linspace(-1, 1, 16).view(1, 4, 4)


class Oracle(LinearAdapter):
    """Class c "believes" the image is X0 + offsets[c] and predicts the exact eps for that belief, so a DDIM
    move and its reverse cancel exactly: inverting and reconstructing under the same class is lossless."""

    def _forward(self, x_t, t, cond):
        abar = self.alphas_cumprod[t].view(-1, 1, 1, 1)
        target = X0 + self.offsets[cond].view(-1, 1, 1, 1)
        return (x_t - abar.sqrt() * target) / (1 - abar).sqrt()


class Spy(LinearAdapter):
    """eps = a * x_t + offsets[c] (inversion is not exact, so distances differ by class), remembering the
    conditioning of every row of every call."""

    class_names = [str(c) for c in range(4)]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.conds = []

    def _forward(self, x_t, t, cond):
        self.conds.append(cond.clone())
        return super()._forward(x_t, t, cond)


def _digits_like(labels):
    rng = np.random.default_rng(0)
    images = rng.uniform(-1, 1, size=(len(labels), 1, 4, 4)).astype(np.float32)
    ids = [f"im{i}" for i in range(len(labels))]
    return Dataset.from_dict({"image": images.tolist(), "label": list(labels), "id": ids})


class TensorClassifier(DiffusionClassifier):
    """Dataset rows hold the pixels themselves."""

    def encode_image(self, image):
        return torch.tensor(image, dtype=torch.float32), ""


def test_ddim_timesteps():
    assert ddim_timesteps(500, 5) == [0, 100, 200, 300, 400, 500]
    assert ddim_timesteps(0, 5) == [0]


def test_exact_inversion_gives_every_candidate_the_same_distance():
    # Inverting under the true class (0) and reconstructing under each class would hand class 0 a lossless
    # round trip and class 1 a redrawing towards its belief: class 0 "wins" by construction.
    adapter = Oracle([0.0, 0.5, -0.3])
    _, leaky = invert_and_reconstruct(adapter, X0, 0, [0, 1, 2], t_start=600, n_steps=12)
    torch.testing.assert_close(leaky[0], X0, atol=1e-4, rtol=1e-4)
    assert ((leaky[1] - X0) ** 2).mean() > 0.1
    # Each candidate inverted and reconstructed under itself: lossless for every class, no winner.
    inverted, recon = round_trips(adapter, X0, [0, 1, 2], t_start=600, n_steps=12)
    for k in range(3):
        torch.testing.assert_close(recon[k], X0, atol=1e-4, rtol=1e-4)
    assert inverted.shape == (3, 1, 4, 4) and not torch.allclose(inverted[0], inverted[1])
    assert to_image(adapter, recon[0]).shape == (4, 4)


def test_labels_do_not_enter_the_round_trips():
    labels = [0, 1, 2, 3, 0, 1, 2, 3, 1, 2]
    candidates = [0, 1, 2, 3]
    runs = {}
    for name, rows in {"true": labels, "shuffled": labels[3:] + labels[:3]}.items():
        adapter = Spy([0.0, 0.4, -0.2, 0.1])
        runs[name] = reconstruct_dataset(TensorClassifier(adapter), _digits_like(rows), t_start=400, n_steps=4,
                                         batch_rows=16, progress=False)
        # every call: row j is candidate j mod 4, through inversion and reconstruction alike
        assert len(adapter.conds) == 2 * 4 * 3  # 2 legs x 4 steps x 3 batches of 4 images
        for cond in adapter.conds:
            assert cond.tolist() == candidates * (len(cond) // 4)
    # the same distances whatever label each image carries; only the scoring of them changes
    np.testing.assert_array_equal(runs["true"].distances, runs["shuffled"].distances)
    assert not np.array_equal(runs["true"].labels, runs["shuffled"].labels)
    d = runs["true"].distances
    assert d.shape == (10, 4) and len(np.unique(d.round(6))) > 4  # the classes do reconstruct differently
    np.testing.assert_array_equal(runs["true"].true_closest(), d.argmin(1) == np.array(labels))
    # batching images together changes nothing but float rounding
    one_by_one = reconstruct_dataset(TensorClassifier(Spy([0.0, 0.4, -0.2, 0.1])), _digits_like(labels),
                                     t_start=400, n_steps=4, batch_rows=4, progress=False)
    np.testing.assert_allclose(one_by_one.distances, d, rtol=1e-5)


def test_a_subset_of_candidates_keeps_the_images_of_those_classes():
    adapter = Spy([0.0, 0.4, -0.2, 0.1])
    conds = Conditionings.from_class_indices([1, 3], adapter.class_names)
    r = reconstruct_dataset(TensorClassifier(adapter), _digits_like([0, 1, 2, 3, 1, 3, 0]), conds, n_images=3,
                            seed=1, t_start=400, n_steps=2, progress=False)
    assert r.n_classes == 2 and set(r.labels) <= {1, 3} and len(r.labels) == 3
    assert all(set(cond.tolist()) == {1, 3} for cond in adapter.conds)
    assert r.table().shape == (6, 6)


def test_true_rank_counts_a_tie_as_a_miss():
    r = Reconstructions(np.array([[0.1, 0.2, 0.3], [0.5, 0.5, 0.9], [0.4, 0.2, 0.1], [0.3, 0.3, 0.3]]),
                        np.array([0, 0, 2, 1]), np.array([0, 1, 2]), ("a", "b", "c"), list("wxyz"), {})
    assert r.true_rank().tolist() == [1, 2, 1, 3]
    assert r.true_closest().tolist() == [True, False, True, False]
    assert r.closest().tolist() == [0, 0, 2, 0]
    # several prompts of one class: the class counts with its closest prompt
    r2 = Reconstructions(np.array([[0.4, 0.1, 0.3]]), np.array([0]), np.array([0, 0, 1]), ("a", "b"), ["w"], {})
    assert r2.true_closest().tolist() == [True]


def test_images_of_no_candidate_class_are_refused():
    adapter = Spy([0.0, 0.4, -0.2, 0.1])
    conds = Conditionings.from_class_indices([1], adapter.class_names)
    with pytest.raises(InputError, match="among the candidate"):
        reconstruct_dataset(TensorClassifier(adapter), _digits_like([0, 2]), conds, progress=False)


def test_latent_model_decodes(classifiers, rgb_image):
    clf = classifiers["sd"]
    x0, _ = clf.encode_image(rgb_image)
    _, recon = round_trips(clf.adapter, x0, ["a photo of a dog", "a red car"], t_start=200, n_steps=4)
    assert recon.shape == (2, *x0.shape)
    assert to_image(clf.adapter, recon[0]).shape == (32, 32, 3)


def test_cli_interpret_writes_a_grid(tiny_models, tmp_path):
    from PIL import Image

    from dclib.cli import main

    Image.fromarray((np.random.RandomState(0).rand(8, 8) * 255).astype(np.uint8)).save(tmp_path / "d.png")
    assert main(["interpret", str(tmp_path / "d.png"), "--model", tiny_models["pixel"], "--labels", "1,2,3",
                 "--t-start", "100", "--steps", "3", "--out", str(tmp_path / "grid.png")]) == 0
    assert Image.open(tmp_path / "grid.png").size[0] > 100
