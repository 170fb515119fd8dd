"""Bad input gets a one-line error; the CLI classifies with a tiny local model."""
import contextlib
import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from dclib import Conditionings, Schedule, ScoreOptions, read_prompt_file
from dclib.decide import decide
from dclib.errors import InputError, NonFiniteError
from dclib.images import load_image
from dclib.noise import NoiseDistribution
from fakes import replay


def run_cli_process(*args):
    """``python -m dclib ARGS`` in a new interpreter, as a user runs it."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "dclib", *args], capture_output=True, text=True, env=env,
                          timeout=300)


def run_cli(*args):
    """dclib's CLI in this process, with the exit status, stdout and stderr a process would give (an interpreter
    start-up per call costs seconds; the help test runs the real ``python -m dclib``)."""
    from dclib.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([str(a) for a in args])
        except SystemExit as stop:  # argparse: --help, usage errors
            code = stop.code
    return subprocess.CompletedProcess(args, code or 0, out.getvalue(), err.getvalue())


@pytest.fixture
def images(tmp_path):
    rng = np.random.RandomState(1)
    paths = {}
    rgb = (rng.rand(48, 64, 3) * 255).astype(np.uint8)
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    Image.fromarray(rgb[..., 0]).save(tmp_path / "gray.png")
    Image.fromarray(np.dstack([rgb, np.full((48, 64), 128, np.uint8)])).save(tmp_path / "rgba.png")
    Image.fromarray(rgb).convert("P").save(tmp_path / "palette.png")
    Image.fromarray(rgb).save(tmp_path / "photo.jpg", quality=90)
    data = (tmp_path / "photo.jpg").read_bytes()
    (tmp_path / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (tmp_path / "text.png").write_text("this is not an image")
    (tmp_path / "empty.png").write_bytes(b"")
    for name in ["rgb.png", "gray.png", "rgba.png", "palette.png", "photo.jpg", "truncated.jpg", "text.png",
                 "empty.png"]:
        paths[name] = str(tmp_path / name)
    return paths


def test_image_modes_are_converted(images):
    assert load_image(images["gray.png"]).mode == "L"
    for name in ["rgb.png", "rgba.png", "palette.png", "photo.jpg"]:
        assert load_image(images[name]).mode == "RGB"
    rgba = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    assert np.asarray(load_image(rgba)).min() == 255  # fully transparent -> white background


@pytest.mark.parametrize("name,message", [("truncated.jpg", "truncated"), ("text.png", "not an image"),
                                          ("empty.png", "not an image"), ("missing.png", "not found")])
def test_unreadable_images(images, tmp_path, name, message):
    with pytest.raises(InputError, match=message):
        load_image(images.get(name, str(tmp_path / name)))


def test_prompt_csv_official_format_with_several_prompts_per_class(tmp_path):
    path = tmp_path / "pets.csv"
    path.write_text("prompt,classname,classidx\na photo of a dog,dog,0\na photo of a puppy,dog,0\n"
                    "\"a photo of a cat, a pet\",cat,1\n")
    conds = read_prompt_file(path)
    assert conds.values == ("a photo of a dog", "a photo of a puppy", "a photo of a cat, a pet")
    assert conds.class_idx == (0, 0, 1) and conds.class_names == ("dog", "cat")


@pytest.mark.parametrize("content,message", [
    ("", "empty"),
    ("text,label\na,b\n", "columns prompt,classname,classidx"),
    ("prompt,classname,classidx\na dog,dog,zero\n", "must be an integer"),
    ("prompt,classname,classidx\na dog,dog,0\na cat,cat,2\n", "without gaps"),
    ("prompt,classname,classidx\na dog,dog,0\na cat,cat,0\n", "named both"),
    ("prompt,classname,classidx\na dog,dog\n", "malformed"),
])
def test_bad_prompt_files(tmp_path, content, message):
    path = tmp_path / "prompts.csv"
    path.write_text(content)
    with pytest.raises(InputError, match=message):
        read_prompt_file(path)


def test_text_prompt_file_one_per_line(tmp_path):
    path = tmp_path / "prompts.txt"
    path.write_text("a red circle\n\na blue square\n")
    assert read_prompt_file(path) == Conditionings.from_prompts(["a red circle", "a blue square"])


def test_classify_api_end_to_end(classifiers, images, tmp_path):
    clf = classifiers["sd"]
    path = tmp_path / "p.csv"
    path.write_text("prompt,classname,classidx\na photo of a dog,dog,0\na photo of a cat,cat,1\n"
                    "a red car,car,2\na blue car,car,2\n")
    result = clf.classify(images["rgb.png"], prompts=str(path), schedule="2,1:5,20")
    d = result.to_dict()
    assert set(d) >= {"prediction", "classes", "mean_errors", "probabilities", "evaluations"}
    assert d["classes"][0] == d["prediction_name"] and sorted(d["classes"]) == ["car", "cat", "dog"]
    assert d["evaluations"] == 4 * 5 + 2 * 15
    # same image, same seed: the same errors; the id defaults to the pixels' hash
    again = clf.classify(images["rgb.png"], prompts=str(path), schedule="2,1:5,20")
    np.testing.assert_array_equal(np.nan_to_num(result.errors, nan=-1), np.nan_to_num(again.errors, nan=-1))


def test_cli_classify_json(tiny_models, images):
    out = run_cli("classify", images["rgb.png"], images["gray.png"], "--model", tiny_models["sd"], "--prompts",
                  "a photo of a dog", "a photo of a cat", "a red car", "--schedule", "2,1:4,8", "--json")
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert len(rows) == 2
    for row in rows:
        assert row["prediction_name"] == row["classes"][0]
        assert row["evaluations"] == 3 * 4 + 2 * 4 and len(row["probabilities"]) == 3


def test_cli_class_conditional_text_output(tiny_models, images):
    out = run_cli("classify", images["rgb.png"], "--model", tiny_models["pixel"], "--labels", "1,2,3",
                  "--schedule", "4", "--loss", "l1")
    assert out.returncode == 0, out.stderr
    assert "denoiser evaluations" in out.stdout and out.stdout.count("error") == 3


@pytest.mark.parametrize("args,message", [
    (["--prompts", "a", "b", "--schedule", "5,2:25,250"], "KeepList must end in 1"),
    (["--prompts", "a", "b", "--schedule", "5,5,1:1,2,3"], "strictly decreasing"),
    (["--prompts", "missing.csv"], "prompt file not found"),
    (["--labels", "1"], "a classifier needs at least two candidates"),  # --labels name a text model's classes too
    (["--prompts", "prompts.cvs"], "prompt file not found: prompts.cvs"),  # a typo, not a prompt (scored p 1.000)
    (["--prompts", "data/prompts"], "prompt file not found"),
    (["--prompts", "a photo of a dog"], "at least two candidate"),  # one sentence: one candidate
    (["--prompts", "a", "b", "--device", "cuda"], "CUDA is not available"),
    (["--prompts", "a", "b", "--device", "cuda:0"], "CUDA is not available"),
    (["--prompts", "a", "b", "--device", "gpu"], "unknown device"),
])
def test_cli_bad_arguments_one_line_errors(tiny_models, images, args, message):
    out = run_cli("classify", images["rgb.png"], "--model", tiny_models["sd"], *args)
    assert out.returncode == 2
    assert message in out.stderr and "Traceback" not in out.stderr
    assert len([line for line in out.stderr.splitlines() if line.startswith("dclib: error")]) == 1


def test_cli_bad_image_and_unknown_model(tiny_models, images):
    out = run_cli("classify", images["text.png"], "--model", tiny_models["sd"], "--prompts", "a", "b")
    assert out.returncode == 2 and "not an image" in out.stderr and "Traceback" not in out.stderr
    out = run_cli("classify", images["rgb.png"], "--model", "someone/unknown-model", "--prompts", "a")
    assert out.returncode == 2 and "not in the local Hugging Face cache" in out.stderr
    assert "Traceback" not in out.stderr


def test_cli_help_documents_every_command():
    out = run_cli("--help")
    assert out.returncode == 0 and "classify" in out.stdout
    out = run_cli_process("classify", "--help")  # once through the real entry point
    for flag in ["--model", "--prompts", "--schedule", "--loss", "--guidance", "--crop", "--noise", "--json"]:
        assert flag in out.stdout


def test_prompt_rows_and_non_string_prompts():
    from dclib.prompts import resolve_conditionings

    rows = [("a photo of a red object.", "red", 0), ("a photo of a blue object.", "blue", 1)]
    conds = resolve_conditionings(rows)
    assert conds.values == ("a photo of a red object.", "a photo of a blue object.")  # not str(tuple)
    assert conds.class_names == ("red", "blue") and conds.class_idx == (0, 1)
    with pytest.raises(InputError, match="strings"):
        resolve_conditionings(["a cat", 3])


@pytest.mark.parametrize("make", [
    lambda: ScoreOptions(guidance=float("nan")),
    lambda: ScoreOptions(guidance=float("-inf")),
    lambda: ScoreOptions(crop=float("nan")),
    lambda: ScoreOptions(crop=1.5),
    lambda: NoiseDistribution.parse("truncated:nan,1"),
    lambda: NoiseDistribution.parse("truncated:-inf,2.5"),
    lambda: Schedule.parse("paired:20,alpha=nan"),
])
def test_non_finite_numeric_options_are_refused(make):
    with pytest.raises(InputError, match="finite|integer|alpha"):
        make()


@pytest.mark.parametrize("temperature", [float("nan"), float("inf"), 0.0, -1.0])
def test_temperature_must_be_positive_and_finite(temperature):
    score, calls = replay(np.array([[0.1, 0.2], [0.3, 0.4]]))
    with pytest.raises(InputError, match="temperature"):
        decide(score, Conditionings.from_prompts(["a", "b"]), Schedule.parse(2), 1000, temperature=temperature)
    assert calls == []  # refused before any scoring


def test_flush_seconds_must_be_finite(tmp_path):
    from dclib import runs

    with pytest.raises(InputError, match="flush_seconds"):
        runs.evaluate("embedded:digits", "embedded:digits-test", tmp_path / "run", flush_seconds=float("nan"))


@pytest.mark.parametrize("bad", [[np.nan, np.nan], [0.1, np.inf]])
def test_non_finite_errors_give_no_prediction(bad):
    """Every error NaN (the old outcome: class 0 with error inf), or just one inf: no prediction."""
    score, _ = replay(np.array([[np.nan, np.nan], bad]))
    with pytest.raises(NonFiniteError, match="NaN or inf"):
        decide(score, Conditionings.from_prompts(["a", "b"]), Schedule.parse(2), 1000)


def test_a_model_returning_nan_classifies_nothing(classifiers, images, monkeypatch):
    clf = classifiers["pixel"]
    monkeypatch.setattr(clf.adapter, "_forward", lambda x_t, t, cond: torch.full_like(x_t, float("nan")))
    with pytest.raises(NonFiniteError):
        clf.classify(images["rgb.png"], class_labels=[1, 2], schedule=2)


@pytest.mark.parametrize("args,message", [
    (["--guidance", "nan"], "guidance must be a finite number, got nan"),
    (["--temperature", "inf"], "temperature must be a finite number, got inf"),
    (["--noise", "truncated:-inf,2"], "a truncation bound must be a finite number, got -inf"),
])
def test_cli_refuses_non_finite_options_in_one_line(tiny_models, images, capsys, args, message):
    from dclib.cli import main

    assert main(["classify", images["rgb.png"], "--model", tiny_models["pixel"], "--labels", "1,2",
                 "--schedule", "2", "--no-progress", *args]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("dclib:")]
    assert errors == [f"dclib: error: {message}"]


def test_cli_calibrate_refuses_a_non_finite_l2(tmp_path, capsys):
    from dclib.cli import main

    assert main(["calibrate", str(tmp_path / "missing-run"), "--l2", "nan"]) == 2
    assert capsys.readouterr().err.strip() == "dclib: error: --l2 must be a finite number, got nan"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the machine without CUDA")
def test_cuda_without_cuda_is_one_line_before_loading(tiny_models):
    from dclib import DiffusionClassifier

    with pytest.raises(InputError, match="CUDA is not available"):
        DiffusionClassifier.from_pretrained(tiny_models["sd"], device="cuda")


def test_one_class_and_flat_image_folders_say_what_a_folder_needs(tmp_path):
    from dclib.runs import open_dataset
    from dclib.testing import save_image_folder

    with pytest.raises(InputError, match="one class subfolder \\(cat\\)"):
        open_dataset(save_image_folder(tmp_path / "one", ["cat"]))
    flat = tmp_path / "flat"
    flat.mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(flat / "a.png")
    with pytest.raises(InputError, match="no class subfolders"):
        open_dataset(flat)
    with pytest.raises(InputError, match="one class subfolder"):  # inside split folders too
        open_dataset(save_image_folder(tmp_path / "split" / "test", ["cat"]).rsplit("/", 1)[0])
    both = tmp_path / "both"
    save_image_folder(both / "train", ["cat", "dog"])
    save_image_folder(both / "test", ["cat", "dog"])
    assert open_dataset(both, split="test").label_names == ["cat", "dog"]


def test_a_label_column_of_names_is_matched_by_name():
    from datasets import Dataset

    from dclib.runs import label_mapping, open_dataset

    ds = Dataset.from_dict({"image": [np.zeros((8, 8), np.uint8)] * 3, "label": ["dog", "cat", "dog"]})
    source = open_dataset(ds)
    assert source.label_names == ["cat", "dog"] and list(source.dataset["label"]) == [1, 0, 1]
    assert label_mapping(source.label_names, Conditionings.from_prompts(["dog", "cat"])) == ("by-name", [1, 0])


def test_a_name_that_is_no_folder_fails_at_once_when_the_hub_cannot_answer(monkeypatch):
    """Offline by environment, or with no network and no offline setting (26 s of retries before)."""
    import time

    import dclib.hub as hub
    from dclib.adapters import load_adapter
    from dclib.errors import ModelNotFoundError
    from dclib.runs import open_dataset

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    started = time.perf_counter()
    with pytest.raises(InputError, match="no local folder of that name.*HF_HUB_OFFLINE"):
        open_dataset("nofolder")
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.setattr(hub, "_reachable", lambda endpoint, timeout: False)
    with pytest.raises(InputError, match="hub cannot be reached"):
        open_dataset("nofolder")
    with pytest.raises(ModelNotFoundError, match="hub cannot be reached"):
        load_adapter("someone/no-such-model")
    assert time.perf_counter() - started < 10


def test_the_hub_probe_answers_from_the_environment_first(monkeypatch):
    import dclib.hub as hub

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hub, "_reachable", lambda endpoint, timeout: pytest.fail("probed while offline"))
    assert not hub.hub_available()
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.setattr(hub, "_reachable", lambda endpoint, timeout: True)
    assert hub.hub_available() and hub.unreachable_reason("someone/no-such-model") is None


def test_evaluate_takes_its_options_in_groups_or_flat_and_refuses_a_stray_name():
    """`evaluate`'s options come in groups (loading, selection, run, settings); flat keywords go to their group, and a
    name of no group stops in one line before anything is loaded."""
    from dclib.runs import LoadOptions, RunOptions, Selection, evaluate
    from dclib.runs.options import split_options
    from dclib.settings import ClassifySettings

    loading, selection, run, settings = split_options(
        {"dtype": "float16", "limit": 5, "progress": False, "schedule": "4"}, selection=Selection(split="test"))
    assert loading == LoadOptions(dtype="float16") and selection == Selection(split="test", limit=5)
    assert run == RunOptions(progress=False) and settings == ClassifySettings(schedule="4")
    with pytest.raises(InputError, match=r"unknown evaluate option\(s\) limti; options: .*limit"):
        evaluate("embedded:digits", "embedded:digits-test", "/nonexistent/never-written", limti=5)
