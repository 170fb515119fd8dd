"""Probabilities that mean something by default: the paper's eq. 6 for any model, an embedded model's card
temperature where its card carries one, a given temperature or a calibration file over both; each labelled."""
import json
import shutil

import numpy as np
import pytest

from dclib import DiffusionClassifier
from dclib.adapters.loading import EMBEDDED_DIR
from dclib.calibration.logits import noise_elements
from dclib.classifier import EQ6
from dclib.decide import posterior
from test_inputs_and_cli import run_cli


def test_a_model_without_a_card_temperature_gets_eq6(classifiers, rgb_image):
    clf = classifiers["sd"]
    result = clf.classify(rgb_image, prompts=["a cat", "a dog", "a car"], schedule="2")
    d = noise_elements(clf)
    assert result.probability_source == EQ6 and result.temperature == pytest.approx(1 / d)
    # eq. 6 as printed: softmax of minus the squared error summed over the d elements (mean error times d)
    np.testing.assert_allclose(result.probabilities, posterior(result.class_errors * d, 1.0), rtol=1e-9)
    given = clf.classify(rgb_image, prompts=["a cat", "a dog", "a car"], schedule="2", temperature=0.5)
    assert given.probability_source == "temperature 0.5 (given)" and given.to_dict()["temperature"] == 0.5
    np.testing.assert_allclose(given.class_errors, result.class_errors)  # the errors do not depend on it


def test_an_embedded_model_uses_its_card_temperature_where_its_settings_match():
    clf = DiffusionClassifier.from_pretrained("embedded:digits")
    card = json.loads((EMBEDDED_DIR / "digits" / "training.json").read_text())["calibration"]
    image = np.zeros((8, 8), np.uint8)
    result = clf.classify(image, schedule="4")
    assert result.temperature == card["temperature"] and result.probability_source.startswith("model card")
    other = clf.classify(image, schedule="4", loss="l1")  # another error scale: the card does not hold
    assert other.probability_source == EQ6
    # the shipped card: fitted on validation rows, and better calibrated on held-out test images than eq. 6
    held = card["heldout"]
    assert "validation" in card["fitted_on"] and held["n"] >= 100
    assert held["card_temperature"]["ece"] < held["eq6"]["ece"] < held["per_element_t1"]["ece"]


def test_a_folder_card_without_a_temperature_and_a_lora_fall_back_to_eq6(tiny_models, tmp_path, rgb_image):
    folder = shutil.copytree(tiny_models["pixel"], tmp_path / "pixel")
    (folder / "training.json").write_text(json.dumps({"calibration": {
        "temperature": 0.25, "fitted_on": "a test", "settings": {"loss": "l2", "objective": "uniform",
                                                                  "guidance": 0.0, "crop": 0, "noise": "normal"}}}))
    assert DiffusionClassifier.from_pretrained(str(folder)).classify(rgb_image, schedule="2").temperature == 0.25
    (folder / "training.json").write_text(json.dumps({"steps_run": 10}))
    assert DiffusionClassifier.from_pretrained(str(folder)).classify(
        rgb_image, schedule="2").probability_source == EQ6


def test_the_cli_says_what_each_probability_is(tiny_models, tmp_path):
    from PIL import Image

    path = tmp_path / "x.png"
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(path)
    out = run_cli("classify", path, "--model", tiny_models["sd"], "--prompts", "a cat", "a dog", "--schedule", "2")
    assert out.returncode == 0 and "p: uncalibrated (eq. 6)" in out.stdout
    out = run_cli("classify", path, "--model", tiny_models["sd"], "--prompts", "a cat", "a dog", "--schedule", "2",
                  "--json")
    row = json.loads(out.stdout.strip().splitlines()[-1])
    assert row["probability_source"] == EQ6 and sum(row["probabilities"]) == pytest.approx(1.0)


@pytest.mark.parametrize("name", ["digits", "mnist", "mnist-learned-variance", "shapes"])
def test_every_shipped_card_temperature_was_fitted_apart_and_beats_eq6_on_held_out_images(name):
    card = json.loads((EMBEDDED_DIR / name / "training.json").read_text())["calibration"]
    held = card["heldout"]
    assert card["temperature"] > 0 and card["settings"]["loss"] == "l2" and held["n"] >= 100
    # fitted on images the ECE never sees: a recipe's validation rows, or scenes of a seed of their own
    fitted_on = card["fitted_on"]
    assert held["dataset"] not in fitted_on and ("validation" in fitted_on or "seed" in fitted_on)
    assert held["card_temperature"]["ece"] < held["eq6"]["ece"]
