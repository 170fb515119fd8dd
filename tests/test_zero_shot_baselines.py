"""Table 1's generative baselines: synthetic-data classifier and UNet-feature logistic regression."""
import numpy as np
import pytest

from dclib.errors import InputError
from dclib.zero_shot_baselines import (UNetFeatures, feature_baseline, generate_images,
                                       load_text_to_image_pipeline, synthetic_data_baseline)


def test_generation_is_seeded_per_sample_not_per_batch(tiny_models):
    pipe = load_text_to_image_pipeline(tiny_models["sd"])
    a, pa = generate_images(pipe, ["a cat", "a dog"], 3, steps=3, batch_size=6, progress=False)
    b, pb = generate_images(pipe, ["a cat", "a dog"], 3, steps=3, batch_size=2, progress=False)
    assert a.dtype == np.uint8 and a.shape[0] == 6 and a.shape[-1] == 3
    assert pa.tolist() == [0, 0, 0, 1, 1, 1] and pa.tolist() == pb.tolist()
    assert np.abs(a.astype(int) - b.astype(int)).max() <= 1  # batch composition changes only the last bit
    assert not np.array_equal(a[0], a[1])  # different samples of one prompt differ


def test_shared_noise_starts_every_prompt_from_the_same_noise(tiny_models):
    pipe = load_text_to_image_pipeline(tiny_models["sd"])
    # the same prompt twice: only the noise can make the two rows differ
    shared, _ = generate_images(pipe, ["a cat", "a cat"], 2, steps=2, progress=False, shared_noise=True)
    own, _ = generate_images(pipe, ["a cat", "a cat"], 2, steps=2, progress=False)
    assert np.array_equal(shared[:2], shared[2:])
    assert not np.array_equal(own[:2], own[2:])
    assert np.array_equal(own[:2], shared[:2])  # prompt 0 keeps its noise either way


def test_synthetic_data_baseline_trains_on_generated_images(tiny_models):
    rows = [("a cat", "cat", 0), ("a dog", "dog", 1)]
    clf, images, labels = synthetic_data_baseline(tiny_models["sd"], rows, n_per_prompt=4, steps=2, epochs=1,
                                                  progress=False)
    assert len(images) == 8 and labels.tolist() == [0] * 4 + [1] * 4
    from dclib.baselines import prepare

    assert clf.predict_proba(prepare(images, images.shape[1], 3)).shape == (8, 2)


def test_unet_features_are_deterministic_and_learnable(classifiers, rgb_image):
    clf = classifiers["sd"]
    feats = UNetFeatures(clf, t=100)
    rng = np.random.RandomState(1)
    images = [(rng.rand(24, 24, 3) * 255).astype(np.uint8) for _ in range(6)]
    x1 = feats(images, batch_size=4, progress=False)
    x2 = feats(images, batch_size=6, progress=False)
    assert x1.shape == (6, clf.adapter.unet.config.block_out_channels[-1])
    np.testing.assert_allclose(x1, x2, rtol=1e-4, atol=1e-5)
    assert not clf.adapter.unet.mid_block._forward_hooks  # the classifier scores on without the hook
    # a separable toy task: bright vs dark images
    bright = [np.full((24, 24, 3), 230, np.uint8) - k for k in range(4)]
    dark = [np.full((24, 24, 3), 20, np.uint8) + k for k in range(4)]
    model = feature_baseline(feats, bright + dark, [1] * 4 + [0] * 4, progress=False)
    assert model.predict(feats([bright[0], dark[0]], progress=False)).tolist() == [1, 0]


def test_unet_features_work_for_class_conditional_pixel_models(classifiers):
    feats = UNetFeatures(classifiers["pixel"], t=50)
    x = feats([np.zeros((8, 8), np.uint8)], progress=False)
    assert np.isfinite(x).all()


def test_unet_features_refuse_transformer_models(classifiers):
    with pytest.raises(InputError, match="mid block"):
        UNetFeatures(classifiers["dit"])
