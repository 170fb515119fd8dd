"""Hugging Face habits: ``classify`` takes a list of images and transformers' ``candidate_labels`` /
``hypothesis_template``; the CLI's ``--labels`` / ``--template``; the ``"diffusion-classifier"`` pipeline."""
import json
import subprocess
import sys

import numpy as np
import pytest
import transformers

from PIL import Image

from dclib import Conditionings, DiffusionClassifier
from dclib.cli import main
from dclib.errors import InputError

SCHEDULE = "4"  # four timesteps: these tests check the plumbing, not accuracy


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """Three user image files: {name: path}."""
    folder, rng = tmp_path_factory.mktemp("images"), np.random.RandomState(1)
    rgb = (rng.rand(48, 64, 3) * 255).astype(np.uint8)
    Image.fromarray(rgb).save(folder / "rgb.png")
    Image.fromarray(rgb[..., 0]).save(folder / "gray.png")
    Image.fromarray(rgb[::-1]).save(folder / "photo.jpg", quality=90)
    return {name: str(folder / name) for name in ["rgb.png", "gray.png", "photo.jpg"]}


@pytest.fixture(scope="module")
def digits():
    """embedded:digits (class-conditional, classes "0".."9") with two of its test images."""
    from dclib.data import load_embedded

    data = load_embedded("embedded:digits-test")
    return DiffusionClassifier.from_pretrained("embedded:digits"), [data[i]["image"] for i in range(2)]


@pytest.fixture(scope="module")
def pipeline_task():
    import dclib.hf_pipeline

    return dclib.hf_pipeline


def same(a, b):
    """Two classifications agree in every number (the seconds aside)."""
    np.testing.assert_array_equal(np.nan_to_num(a.errors, nan=-1), np.nan_to_num(b.errors, nan=-1))
    da, db = a.to_dict(), b.to_dict()
    da.pop("seconds"), db.pop("seconds")
    assert da == db


# ------------------------------------------------------------------------------------------ classify(list)
def test_a_list_of_images_gives_each_image_its_own_result(classifiers, images):
    clf = classifiers["sd"]
    paths = [images["rgb.png"], images["gray.png"], images["photo.jpg"]]
    prompts = ["a photo of a dog", "a photo of a cat", "a red car"]
    alone = [clf.classify(p, prompts=prompts, schedule="2,1:4,8") for p in paths]
    for batch in (clf.classify(paths, prompts=prompts, schedule="2,1:4,8"),
                  clf.classify(tuple(reversed(paths)), prompts=prompts, schedule="2,1:4,8")[::-1],
                  clf.classify_batch(paths, prompts=prompts, schedule="2,1:4,8")):
        assert isinstance(batch, list) and len(batch) == 3
        for one, many in zip(alone, batch):
            same(one, many)
    assert not isinstance(clf.classify(paths[0], prompts=prompts, schedule=2), list)
    assert clf.classify([], prompts=prompts, schedule=2) == []


def test_a_list_takes_one_image_id_per_image(classifiers, images):
    clf = classifiers["pixel"]
    paths = [images["rgb.png"], images["gray.png"]]
    results = clf.classify(paths, class_labels=[1, 2], schedule=2, image_id=["a", "b"])
    assert [r.image_id for r in results] == ["a", "b"]
    same(results[1], clf.classify(paths[1], class_labels=[1, 2], schedule=2, image_id="b"))
    with pytest.raises(InputError, match="a list of 2 images takes a list of 2 image ids"):
        clf.classify(paths, class_labels=[1, 2], schedule=2, image_id="a")


# ------------------------------------------------------------------------------------------ candidate_labels
def test_candidate_labels_of_a_text_model_are_class_names_in_the_template(classifiers, images):
    clf = classifiers["sd"]
    names = ["golden_retriever", "cat", "red car"]
    result = clf.classify(images["rgb.png"], candidate_labels=names, hypothesis_template="a {} photo",
                          schedule=SCHEDULE)
    assert result.conditionings == Conditionings(("a golden retriever photo", "a cat photo", "a red car photo"),
                                                 (0, 1, 2), tuple(names))
    assert result.prediction_name in names  # the class names stay as given
    default = clf.classify(images["rgb.png"], candidate_labels=names, schedule=SCHEDULE)
    assert default.conditionings.values[1] == "a photo of a cat."
    by_prompts = clf.classify(images["rgb.png"], prompts=[f"a photo of a {n}." for n in ["golden retriever", "cat",
                                                                                       "red car"]],
                              schedule=SCHEDULE)
    np.testing.assert_array_equal(default.errors, by_prompts.errors)


def test_candidate_labels_of_a_class_conditional_model_are_its_classes(classifiers, images):
    clf = classifiers["pixel"]
    by_labels = clf.classify(images["rgb.png"], class_labels=[1, 3, 5], schedule=SCHEDULE)
    for candidates in ([1, 3, 5], ["1", "3", "5"], "1,3,5"):
        same(by_labels, clf.classify(images["rgb.png"], candidate_labels=candidates, schedule=SCHEDULE))


@pytest.mark.parametrize("model,kwargs,message", [
    ("sd", dict(candidate_labels=["a", "b"], prompts=["a", "b"]), "pass candidate_labels or prompts/class_labels, "
                                                                  "not both"),
    ("pixel", dict(candidate_labels=[1, 2], class_labels=[1, 2]), "not both"),
    ("sd", dict(candidate_labels=["cat"]), "a classifier needs at least two candidates"),
    ("pixel", dict(candidate_labels=[3]), "a classifier needs at least two candidates"),
    ("sd", dict(candidate_labels=["a", "b"], hypothesis_template="a photo"), "exactly one '{}'"),
    ("sd", dict(candidate_labels=["a", "b"], hypothesis_template="{} and {}"), "exactly one '{}'"),
    ("pixel", dict(candidate_labels=[1, 2], hypothesis_template="a {}"), "class-conditional"),
    ("sd", dict(prompts=["a", "b"], hypothesis_template="a {}"), "pass candidate_labels too"),
])
def test_candidate_label_mistakes_are_one_line_input_errors(classifiers, images, model, kwargs, message):
    with pytest.raises(InputError, match=message.replace("(", r"\(")) as err:
        classifiers[model].classify([images["rgb.png"]], schedule=SCHEDULE, **kwargs)
    assert "\n" not in str(err.value)


# ------------------------------------------------------------------------------------------ the CLI
def cli(capsys, *args):
    """(exit status, stdout, stderr) of ``python -m dclib classify IMAGE ARGS``, run in this process."""
    code = main(["classify", *args, "--no-progress"])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_labels_of_a_text_model_fill_the_template(tiny_models, images, capsys):
    code, out, err = cli(capsys, images["rgb.png"], "--model", tiny_models["sd"], "--labels", "dog,cat,red_car",
                         "--template", "a photo of the {}", "--schedule", SCHEDULE, "--json")
    assert code == 0, err
    row = json.loads(out)
    assert row["conditionings"] == ["a photo of the dog", "a photo of the cat", "a photo of the red car"]
    assert sorted(row["classes"]) == ["cat", "dog", "red_car"]
    code, out, err = cli(capsys, images["rgb.png"], "--model", tiny_models["sd"], "--labels", "dog,cat",
                         "--schedule", SCHEDULE, "--json")
    assert code == 0, err
    assert json.loads(out)["conditionings"] == ["a photo of a dog.", "a photo of a cat."]


@pytest.mark.parametrize("model,args,message", [
    ("sd", ["--prompts", "a dog", "a cat", "--labels", "dog,cat"], "pass --prompts or --labels"),
    ("sd", ["--prompts", "a dog", "a cat", "--template", "a {}"], "--template fills the class names of --labels"),
    ("sd", ["--labels", "dog,cat", "--template", "a photo"], "exactly one '{}'"),
    ("pixel", ["--labels", "1,2", "--template", "a {}"], "class-conditional models take no template"),
])
def test_cli_label_mistakes_one_line_errors(tiny_models, images, capsys, model, args, message):
    code, _, err = cli(capsys, images["rgb.png"], "--model", tiny_models[model], "--schedule", SCHEDULE, *args)
    errors = [line for line in err.splitlines() if line.startswith("dclib:")]
    assert code == 2 and len(errors) == 1 and message in errors[0], err


# ------------------------------------------------------------------------------------------ the pipeline
def test_import_dclib_registers_nothing_and_loads_no_transformers():
    code = "import sys, dclib; print('transformers' in sys.modules, 'dclib.hf_pipeline' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.split() == ["False", "False"], out.stderr


def check_ranked(ranked, result):
    """The pipeline's answer for one image: the candidates' classes by score, each score the probability."""
    names, probs = result.conditionings.class_names, result.probabilities
    assert {d["label"] for d in ranked} == {names[k] for k in set(result.conditionings.class_idx)}
    assert [d["score"] for d in ranked] == sorted((d["score"] for d in ranked), reverse=True)
    for d in ranked:
        assert d["score"] == float(probs[names.index(d["label"])])
    assert ranked[0]["label"] == result.prediction_name


def test_pipeline_on_a_class_conditional_model(pipeline_task, digits):
    clf, images = digits
    pipe = transformers.pipeline("diffusion-classifier", model=clf)
    assert isinstance(pipe, pipeline_task.DiffusionClassifierPipeline) and pipe.model is clf
    one = pipe(images[0], candidate_labels=["4", "8", "1"], schedule=SCHEDULE)
    check_ranked(one, clf.classify(images[0], candidate_labels=["4", "8", "1"], schedule=SCHEDULE))
    # batch_size is classify's (denoiser pairs per call), not transformers' images per DataLoader batch
    many = pipe(images, candidate_labels=[4, 8, 1], schedule=SCHEDULE, seed=3, batch_size=2)
    assert isinstance(many, list) and len(many) == 2 and many[0] != one  # another seed, other noise
    for ranked, image in zip(many, images):
        check_ranked(ranked, clf.classify(image, class_labels=[4, 8, 1], schedule=SCHEDULE, seed=3, batch_size=2))
    every_class = pipe(tuple(images), schedule=SCHEDULE)  # no candidates: all ten classes
    assert [len(r) for r in every_class] == [10, 10]
    with pytest.raises(InputError, match="takes no hypothesis_template"):
        pipe(images[0], candidate_labels=["4", "8"], hypothesis_template="a {}", schedule=SCHEDULE)


def test_pipeline_on_a_text_model(pipeline_task, classifiers, images):
    clf = classifiers["sd"]
    pipe = transformers.pipeline("diffusion-classifier", model=clf, schedule=SCHEDULE)  # a default option
    paths = [images["rgb.png"], images["gray.png"]]
    names = ["dog", "cat", "red car"]
    answers = pipe(paths, candidate_labels=names, hypothesis_template="a photo of the {}")
    for ranked, path in zip(answers, paths):
        check_ranked(ranked, clf.classify(path, candidate_labels=names, hypothesis_template="a photo of the {}",
                                          schedule=SCHEDULE))
    assert pipe(paths[0], candidate_labels=names, temperature=0.5) != answers[0]
    assert "diffusion-classifier" in transformers.pipelines.get_supported_tasks()


def test_pipeline_from_a_model_string(pipeline_task, digits, tiny_models, images):
    clf, digit_images = digits
    pipe = pipeline_task.pipeline("embedded:digits", device="cpu")
    assert pipe.model.adapter.model_id == clf.adapter.model_id
    assert pipe(digit_images[1], candidate_labels=["4", "8"], schedule=SCHEDULE) == \
        transformers.pipeline("diffusion-classifier", model=clf)(digit_images[1], candidate_labels=["4", "8"],
                                                                schedule=SCHEDULE)
    direct = pipeline_task.DiffusionClassifierPipeline(model=tiny_models["sd"], task="diffusion-classifier")
    assert [d["label"] for d in direct(images["rgb.png"], candidate_labels=["dog", "cat"], schedule=2)] in (
        ["dog", "cat"], ["cat", "dog"])
    assert "DiffusionClassifierPipeline(" in repr(direct)
