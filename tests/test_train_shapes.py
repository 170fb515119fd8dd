"""The shapes recipes (embedded:shapes, embedded:shapes-clip) at toy sizes: they train, save folders that
load through the public paths, and the tokenizer / caption-truth helpers behave."""
import numpy as np
import pytest
import torch

from dclib.data import captions as cap
from dclib.train.shapes import (ClipRecipe, ShapesRecipe, build_word_tokenizer, caption_truth, caption_words,
                                TimestepLossBalance, build_scheduler, hard_negatives, longest_caption_tokens,
                                multi_positive_nce, tokenize, train_shapes, train_shapes_clip, training_target)

TINY_SD = dict(n_scenes=64, n_val=16, vae_channels=(8, 16), vae_steps=3, vae_batch=8, vae_warmup=1,
               text_layers=1, text_intermediate=64, unet_channels=(32, 32), heads=(1, 1), batch_size=8, warmup=1,
               eval_every=2, checkpoints=(2,))
TINY_CLIP = dict(n_scenes=64, n_val=32, text_layers=1, text_intermediate=64, vision_hidden=32, vision_layers=1,
                 vision_intermediate=64, projection_dim=16, batch_size=16, warmup=1, eval_every=2)


@pytest.fixture(scope="module")
def tokenizer():
    return build_word_tokenizer(model_max_length=16)


def test_every_caption_word_is_one_token(tokenizer):
    for word in caption_words():
        assert len(tokenizer(word).input_ids) == 3, word  # BOS word EOS
    assert longest_caption_tokens(tokenizer) <= 16


def test_different_prompts_get_different_ids(tokenizer, tmp_path):
    from transformers import CLIPTokenizer

    prompts = ["a red circle", "a blue circle", "a blue square left of a red star", ""]
    ids = tokenize(tokenizer, prompts)
    assert ids.shape == (4, 16)
    assert len({tuple(row) for row in ids.tolist()}) == 4
    tokenizer.save_pretrained(tmp_path)  # the round trip the pipeline folder relies on
    assert torch.equal(tokenize(CLIPTokenizer.from_pretrained(tmp_path), prompts), ids)


def _scene(**kw):
    base = {"n_objects": 2, "shape1": "circle", "colour1": "red", "size1": "small", "pos1": "left",
            "shape2": "square", "colour2": "blue", "size2": "large", "pos2": "right", "relation": "left_of"}
    return {**base, **kw}


def test_caption_truth_follows_the_grammar():
    t = cap.TEMPLATE_BY_ID
    one = {"n_objects": 1, "shape1": "circle", "colour1": "red", "size1": "small", "pos1": "left", "shape2": None,
           "colour2": None, "size2": None, "pos2": None, "relation": None}
    a = _scene()
    swapped = _scene(shape1="square", colour1="blue", size1="large", shape2="circle", colour2="red", size2="small")
    other_size = {**one, "size1": "large", "pos1": "right"}
    # "a {colour1} {shape1}" says nothing of size or position; it never describes a two-object scene
    truth = caption_truth([one, other_size, a], [one], [t["one-train-0"]])
    assert truth[:, 0].tolist() == [True, True, False]
    # "and" does not state an order; "left of" does
    assert caption_truth([swapped], [a], [t["two-train-0"]])[0, 0]
    assert not caption_truth([swapped], [a], [t["left_of-train-0"]])[0, 0]
    # hard negatives: colour swaps are kept; exchanging the objects of an "and" caption is not a negative
    texts, _, _ = hard_negatives([a], [t["two-train-0"]])
    assert "a red circle and a blue square" not in texts and "a blue circle and a red square" in texts
    texts, _, _ = hard_negatives([a], [t["left_of-train-0"]])
    assert "a blue square left of a red circle" in texts


def test_multi_positive_nce_is_cross_entropy_with_one_positive():
    logits = torch.randn(4, 6)
    positive = torch.zeros(4, 6, dtype=torch.bool)
    positive[torch.arange(4), torch.tensor([0, 2, 5, 1])] = True
    expected = torch.nn.functional.cross_entropy(logits, torch.tensor([0, 2, 5, 1]))
    assert torch.allclose(multi_positive_nce(logits, positive), expected)


def test_train_shapes_tiny_saves_a_loadable_pipeline(tmp_path):
    from dclib import DiffusionClassifier
    from dclib.data import render_scenes

    out = tmp_path / "shapes"
    facts = train_shapes(out, steps=3, progress=False, recipe=ShapesRecipe(**TINY_SD))
    assert facts["steps_run"] == 3 and facts["vae_steps"] == 3
    assert np.isfinite(facts["final_train_loss"]) and facts["scaling_factor"] > 0
    assert (out / "README.md").exists() and (out / "training.json").exists()
    assert facts["checkpoints"] == ["step-00002"]
    images, scenes = render_scenes(1, seed=5, p_single=1.0)
    for folder in (out, out / "checkpoints" / "step-00002"):
        clf = DiffusionClassifier.from_pretrained(str(folder))
        assert clf.adapter.unet.dtype == torch.float32
        assert clf.adapter.vae.config.scaling_factor == pytest.approx(facts["scaling_factor"], rel=1e-3)
        result = clf.classify(images[0], prompts=[f"a {scenes[0]['colour1']} {scenes[0]['shape1']}", "a green star"],
                              schedule=2)
        assert result.prediction in (0, 1)
    # the shipped weights are fp16 on disk
    from safetensors import safe_open

    with safe_open(str(out / "unet" / "diffusion_pytorch_model.safetensors"), "pt") as f:
        assert f.get_tensor(next(iter(f.keys()))).dtype == torch.float16


def test_training_targets_match_diffusers():
    sched = build_scheduler(ShapesRecipe(prediction_type="v_prediction"))
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(3, 4, 8, 8, generator=g), torch.randn(3, 4, 8, 8, generator=g)
    t = torch.tensor([0, 500, 999])
    abar = sched.alphas_cumprod[t].view(-1, 1, 1, 1)
    torch.testing.assert_close(training_target("v_prediction", x0, eps, abar), sched.get_velocity(x0, eps, t))
    assert training_target("epsilon", x0, eps, abar) is eps
    with pytest.raises(ValueError, match="prediction_type"):
        training_target("sample", x0, eps, abar)
    with pytest.raises(ValueError, match="prediction_type"):
        build_scheduler(ShapesRecipe(prediction_type="x0"))


def test_v_prediction_recipe_saves_a_v_scheduler_that_the_adapter_reads(tmp_path):
    from dclib import DiffusionClassifier

    out = tmp_path / "shapes-v"
    train_shapes(out, steps=2, progress=False, recipe=ShapesRecipe(**{**TINY_SD, "checkpoints": ()},
                                                                   prediction_type="v_prediction",
                                                                   beta_schedule="linear", beta_start=1e-4,
                                                                   beta_end=0.02))
    clf = DiffusionClassifier.from_pretrained(str(out))
    assert clf.adapter.prediction_type == "v_prediction"
    # the model's own schedule (linear 1e-4..0.02 here) is what the scorer uses
    assert float(clf.adapter.betas[0]) == pytest.approx(1e-4) and float(clf.adapter.betas[-1]) == pytest.approx(0.02)


def test_timestep_loss_balance_makes_every_noise_level_count_alike():
    balance = TimestepLossBalance(n_bins=2, num_timesteps=1000, decay=0.5)
    t = torch.tensor([100, 200, 600, 900])
    loss = torch.tensor([4.0, 4.0, 1.0, 1.0])  # the low-noise bin's loss is 4x the high-noise bin's
    for _ in range(20):
        weights = balance(t, loss)
    torch.testing.assert_close(weights, torch.tensor([0.625, 0.625, 2.5, 2.5]))  # mean running loss 2.5
    weighted = weights * loss
    assert weighted[0] == pytest.approx(weighted[2])
    # a bin seen for the first time takes its batch mean, and unseen bins do not enter the mean
    fresh = TimestepLossBalance(n_bins=4)
    assert fresh(torch.tensor([0, 10]), torch.tensor([2.0, 4.0])).tolist() == [1.0, 1.0]


def test_latent_scale_and_loss_weighting_reach_the_saved_pipeline(tmp_path):
    out = tmp_path / "shapes-scaled"
    base = {**TINY_SD, "checkpoints": (), "vae_steps": 0}
    facts = train_shapes(out, steps=2, progress=False, recipe=ShapesRecipe(**base, latent_scale=0.25,
                                                                           loss_weighting="per-timestep"))
    reference = train_shapes(tmp_path / "ref", steps=0, progress=False, recipe=ShapesRecipe(**base))
    # the same untrained VAE (same seed): the scaling factor is a quarter of the unit-variance one
    assert facts["scaling_factor"] == pytest.approx(reference["scaling_factor"] / 4, rel=1e-5)
    assert np.isfinite(facts["final_train_loss"])
    with pytest.raises(ValueError, match="loss_weighting"):
        train_shapes(tmp_path / "bad", steps=1, progress=False, recipe=ShapesRecipe(**base, loss_weighting="snr"))


def test_manyclass_world_trains_a_pipeline_that_reads_its_prompts(tmp_path):
    from dclib import DiffusionClassifier
    from dclib.data import manyclass
    from dclib.train.worlds import ClassPool, manyclass_longest_tokens

    out = tmp_path / "manyclass"
    recipe = ShapesRecipe(**{**TINY_SD, "checkpoints": (), "n_scenes": 256, "n_val": 256}, name="manyclass-tiny",
                          world="manyclass")
    facts = train_shapes(out, steps=2, progress=False, recipe=recipe)
    assert facts["train_images"] == 256 and facts["recipe"]["world"] == "manyclass"
    assert "embedded:manyclass-train" in (out / "README.md").read_text()
    tokenizer = build_word_tokenizer(manyclass.caption_words(), model_max_length=16)
    assert facts["longest_caption_tokens"] == manyclass_longest_tokens(tokenizer) <= 16
    # held-out wording is drawn from the held-out templates only, and names the picture's class
    pool = ClassPool(manyclass.val_split())
    texts, templates = pool.captions([0, 1, 2], np.random.default_rng(0), "heldout")
    assert set(templates) <= set(manyclass.HELDOUT_TEMPLATES)
    assert all(w in text for text, k in zip(texts, [0, 1, 2]) for w in manyclass.CLASSES[k].split())
    test = manyclass.test_split(25)
    prompts = [row[0] for row in manyclass.prompt_rows(3)]
    result = DiffusionClassifier.from_pretrained(str(out)).classify(test.images[0], prompts=prompts, schedule=2)
    assert result.prediction in (0, 1, 2)
    with pytest.raises(ValueError, match="world"):
        train_shapes(tmp_path / "bad", steps=1, progress=False, recipe=ShapesRecipe(**TINY_SD, world="mars"))


def test_train_shapes_clip_tiny_loads_and_scores(tmp_path):
    from dclib.contrastive import ContrastiveModel
    from dclib.data import render_scenes

    out = tmp_path / "clip"
    facts = train_shapes_clip(out, steps=3, progress=False, recipe=ClipRecipe(**TINY_CLIP))
    assert facts["steps_run"] == 3 and np.isfinite(facts["final_train_loss"])
    assert facts["mean_hard_negatives_per_batch"] > 0
    model = ContrastiveModel.from_pretrained(str(out))
    assert model.model.dtype == torch.float32
    images, _ = render_scenes(2, seed=5)
    prompts = ["a red circle", "a blue square"]
    scores = model.scores(list(images), prompts)
    assert scores.shape == (2, 2) and np.isfinite(scores).all()
    assert not torch.allclose(*model.encode_text(prompts))
    rows = [("a red circle", "red", 0), ("a red square", "red", 0), ("a blue square", "blue", 1)]
    result = model.classify(list(images), rows)
    assert result.class_scores.shape == (2, 2) and set(result.predictions.tolist()) <= {0, 1}
    assert result.prediction_names[0] in ("red", "blue")


def test_clip_folder_resolves_as_embedded_and_is_no_diffusion_model(tmp_path, monkeypatch):
    from dclib import DiffusionClassifier, ModelNotFoundError
    from dclib.adapters import loading
    from dclib.contrastive import ContrastiveModel

    out = tmp_path / "toy-clip"
    train_shapes_clip(out, steps=1, progress=False, recipe=ClipRecipe(**{**TINY_CLIP, "eval_every": 1}))
    monkeypatch.setattr(loading, "EMBEDDED_DIR", tmp_path)
    assert ContrastiveModel.from_pretrained("embedded:toy-clip").scores([np.zeros((32, 32, 3), np.uint8)],
                                                                       ["a red circle"]).shape == (1, 1)
    with pytest.raises(ModelNotFoundError, match="CLIPModel"):
        DiffusionClassifier.from_pretrained(str(out))


def test_manyclass_clip_learns_from_attribute_truth_and_hard_neighbours(tmp_path, monkeypatch):
    """The many-class partner: trains on its world's pictures with neighbour-class negatives, validates top-1 over
    every class's caption, and its truth matrix is attribute matching (a caption naming two attributes is true of
    every picture with both)."""
    from dclib.contrastive import ContrastiveModel
    from dclib.data import manyclass
    from dclib.train import clip

    captured = []
    original = clip.multi_positive_nce
    monkeypatch.setattr(clip, "multi_positive_nce", lambda logits, truth: captured.append(truth) or original(logits, truth))
    out = tmp_path / "mc-clip"
    recipe = ClipRecipe(**{**TINY_CLIP, "n_scenes": 256, "n_val": 256}, name="manyclass-clip-tiny", world="manyclass",
                        hard_negatives=2, hard_pictures=True)
    facts = train_shapes_clip(out, steps=2, progress=False, recipe=recipe)
    assert facts["train_images"] == 256 and set(facts["final_val"]) == {"top1_train", "top1_heldout"}
    assert 0 < facts["mean_hard_negatives_per_batch"] <= 2 * 16
    assert "embedded:manyclass-train" in (out / "README.md").read_text()
    assert "Hard pictures = True" in (out / "README.md").read_text()
    truth = captured[0]  # image -> caption: 16 pictures x (16 captions + their negatives)
    assert truth.shape[0] == 16 and truth.shape[1] > 16 and truth[:, :16].diagonal().all()
    assert not truth[:, 16:].diagonal().any()  # a picture's own hard negative changes an attribute its caption names
    model = ContrastiveModel.from_pretrained(str(out))
    rows = [(manyclass.caption(n, manyclass.PROMPT_TEMPLATE), n, k) for k, n in enumerate(manyclass.CLASSES[:5])]
    assert model.classify([np.zeros((32, 32, 3), np.uint8)], rows).class_scores.shape == (1, 5)


def test_hard_pictures_are_the_training_drawings_made_harder_and_only_the_manyclass_world_has_them(tmp_path):
    """The many-class partner's hard-picture recipe: the same drawings and labels as the clean training pictures,
    each shrunk, faded or noised by its own draws (so not the clean picture, and reproducible), never a test or dev
    picture; the shapes world has no evaluation nuisance, so asking for it there is an error, before any rendering."""
    from dclib.data import manyclass
    from dclib.train.worlds import manyclass_pools

    clean, _ = manyclass_pools(256, 256)
    hard, hard_val = manyclass_pools(256, 256, hard_pictures=True)
    assert np.array_equal(hard.labels, clean.labels)
    assert all(not np.array_equal(h, c) for h, c in zip(hard.images[:20], clean.images[:20]))
    again, _ = manyclass_pools(256, 256, hard_pictures=True)
    assert np.array_equal(again.images, hard.images)
    # fainter objects: the pictures' spread around their background shrinks on average
    assert np.mean([h.std() for h in hard.images]) < np.mean([c.std() for c in clean.images])
    shown = {p.tobytes() for p in manyclass.dev_split().images} | {p.tobytes() for p in manyclass.test_split().images}
    assert not any(p.tobytes() in shown for p in np.concatenate([hard.images, hard_val.images]))
    recipe = ClipRecipe(**TINY_CLIP, name="shapes-clip-hard", hard_pictures=True)
    with pytest.raises(ValueError, match="hard_pictures"):
        train_shapes_clip(tmp_path / "x", steps=1, progress=False, recipe=recipe)


def test_neighbour_classes_change_one_attribute_and_templates_name_theirs():
    from dclib.data import manyclass

    near = manyclass.neighbour_classes("red striped circle")
    assert len(near) == 7 + 3 + 7 and ("blue striped circle", "colour") in near
    assert ("red dotted circle", "pattern") in near and ("red striped square", "shape") in near
    assert all(n in manyclass.CLASSES and n != "red striped circle" for n, _ in near)
    assert manyclass.named_attributes("a {colour} {shape}") == ("colour", "shape")
    assert manyclass.named_attributes(manyclass.PROMPT_TEMPLATE) == manyclass.ATTRIBUTES


class _Stop(Exception):
    pass


@pytest.mark.parametrize("stop_at", ["unet step 3", "vae done"])
def test_a_stopped_run_goes_on_to_the_same_weights_as_one_never_stopped(tmp_path, monkeypatch, stop_at):
    """A session that ends mid-training loses nothing: the next call of train_shapes into the same folder goes on
    from the last saved step (the VAE, or the UNet every eval_every steps) and ends bit for bit where an
    uninterrupted run ends; a saved run of another recipe is refused."""
    from safetensors.torch import load_file

    from dclib.train import loop, text_to_image

    recipe = ShapesRecipe(**{**TINY_SD, "checkpoints": (2,)}, name="resume-tiny")
    whole = train_shapes(tmp_path / "whole", steps=4, progress=False, recipe=recipe)
    assert whole["resumed_from_step"] == 0 and not (tmp_path / "whole" / "resume").exists()

    if stop_at == "vae done":  # stop right after the VAE stage was saved
        real = text_to_image.encode_latents
        monkeypatch.setattr(text_to_image, "encode_latents", lambda *a, **k: (_ for _ in ()).throw(_Stop()))
    else:  # stop inside the UNet's step 3 (after step 2's save)
        real = loop.cosine_lr
        monkeypatch.setattr(loop, "cosine_lr", lambda step, *a: (_ for _ in ()).throw(_Stop()) if step == 2 and a[0] == 4
                            else real(step, *a))
    with pytest.raises(_Stop):
        train_shapes(tmp_path / "stopped", steps=4, progress=False, recipe=recipe)
    monkeypatch.undo()
    assert (tmp_path / "stopped" / "resume" / "vae.pt").exists()
    with pytest.raises(ValueError, match="another recipe or step count"):
        train_shapes(tmp_path / "stopped", steps=6, progress=False, recipe=recipe)
    again = train_shapes(tmp_path / "stopped", steps=4, progress=False, recipe=recipe)
    assert again["resumed_from_step"] == (2 if stop_at == "unet step 3" else 0)
    # the card's training time counts the stopped process's steps too
    assert whole["unet_seconds_all_runs"] == whole["unet_seconds"]
    assert again["unet_seconds_all_runs"] >= again["unet_seconds"] if stop_at == "vae done" else \
        again["unet_seconds_all_runs"] > again["unet_seconds"]
    assert again["history"] == whole["history"] and again["checkpoints"] == whole["checkpoints"] == ["step-00002"]
    assert not (tmp_path / "stopped" / "resume").exists()
    for part in ("unet", "text_encoder", "vae"):
        a = load_file(next((tmp_path / "whole" / part).glob("*.safetensors")))
        b = load_file(next((tmp_path / "stopped" / part).glob("*.safetensors")))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), part


def test_a_caption_is_true_of_every_picture_with_each_attribute_it_names():
    from dclib.data import manyclass
    from dclib.train.clip import attribute_truth

    classes = ["red striped circle", "blue striped circle", "red dotted square"]
    attributes = np.array([manyclass.attribute_indices(n) for n in classes])
    assert attributes.tolist() == [[0, 1, 0], [6, 1, 0], [0, 2, 3]]  # red=0, blue=6; striped=1, dotted=2; square=3
    captions = [(0, "a {colour} {pattern} {shape}"),   # red striped circle: picture 0 only
                (0, "a {colour} {shape}"),              # red circle: any pattern -> picture 0
                (1, "a {pattern} {shape}"),             # striped circle: any colour -> pictures 0 and 1
                (2, "a {colour} {pattern} shape"),      # red dotted (any shape) -> picture 2
                (1, "a {colour} {shape}")]              # blue circle -> picture 1
    named = [manyclass.named_attributes(t) for _, t in captions]
    truth = attribute_truth(attributes, [0, 1, 2], [c for c, _ in captions], named)
    expected = np.array([[1, 1, 1, 0, 0],
                         [0, 0, 1, 0, 1],
                         [0, 0, 0, 1, 0]], bool)
    assert np.array_equal(truth, expected)
