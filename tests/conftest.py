import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

import numpy as np
import pytest
import torch

# make test runs these files on two pytest-xdist workers: one torch thread each then, not two each on two cores
torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER") else min(2, os.cpu_count() or 1))


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory):
    """One tiny pipeline of each family, saved with save_pretrained: {name: folder}."""
    from dclib.testing import save_tiny_models

    return save_tiny_models(tmp_path_factory.mktemp("tiny-models"))


@pytest.fixture(scope="session")
def classifiers(tiny_models):
    """Each tiny folder loaded through the public from_pretrained path."""
    from dclib import DiffusionClassifier

    return {name: DiffusionClassifier.from_pretrained(path) for name, path in tiny_models.items()}


@pytest.fixture
def rgb_image():
    rng = np.random.RandomState(0)
    return (rng.rand(40, 52, 3) * 255).astype(np.uint8)
