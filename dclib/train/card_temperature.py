"""The temperature an embedded model's card carries, so its probabilities mean something by default.

Fitted by temperature scaling (:class:`dclib.calibration.Calibrator`) on images no test, book page or ECE figure
uses: a pixel recipe's validation images (held out from training; they only chose the best step), or for a
text-to-image model cluttered scenes drawn with a seed of their own. The card also
records the expected calibration error of the default on held-out test images, beside the paper's eq. 6 and the
old per-element T = 1, so a reader sees what the default buys.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..adapters.loading import EMBEDDED_DIR
from ..calibration import Calibrator
from ..calibration.logits import noise_elements, per_element_temperature, uncalibrated_probabilities
from ..calibration.metrics import calibration_metrics
from ..classifier import SCALE_KEYS, DiffusionClassifier
from ..prompts import Conditionings
from ..settings import ClassifySettings
from .pixel import RECIPES, split_validation
from .run import TEST_SETS

#: The settings the card temperature is fitted with: the classifier's defaults (schedule 100, l2, uniform).
FIT_SETTINGS = ClassifySettings()


def _class_errors(clf, images, ids, prompts, progress: bool, desc: str) -> np.ndarray:
    rows = []
    for image, image_id in tqdm(list(zip(images, ids)), desc=desc, disable=not progress):
        rows.append(clf.classify(image, prompts, settings=FIT_SETTINGS, image_id=image_id).class_errors)
    return np.stack(rows)


#: text-to-image models: fitted on cluttered scenes of their own seed, judged on the zero-shot benchmark
TEXT_MODELS = ("shapes", "shapes-25k")


def fit_card_temperature(name: str, model: str | Path | None = None, n_heldout: int = 200, n_fit: int = 200,
                         progress: bool = True) -> dict:
    """Fit the temperature of embedded model ``name`` and write it into the card's ``training.json`` under
    ``calibration``, with the ECE of the default on the first ``n_heldout`` test images. Returns that entry.

    A pixel recipe (digits, mnist, mnist-learned-variance) is fitted on its validation images; a text-to-image
    model (shapes, shapes-25k) on ``n_fit`` cluttered scenes drawn with their own seed
    (``data.shapes.CALIBRATION_SEED``) under the benchmark's prompts, and judged on embedded:zeroshot-test."""
    from ..data import embedded_arrays  # loads datasets: seconds, which the CLI's --help must not wait for

    if name not in (*RECIPES, *TEXT_MODELS):
        raise ValueError(f"card temperatures are fitted for {', '.join((*RECIPES, *TEXT_MODELS))}; got {name!r}")
    folder = Path(model or EMBEDDED_DIR / name)
    clf = DiffusionClassifier.from_pretrained(str(folder))
    if name in TEXT_MODELS:
        from ..data.shapes import CALIBRATION_SEED, CLUTTER_TASK, clutter_prompts, labelled_scenes

        prompts = Conditionings.from_rows(clutter_prompts())
        images, fit_labels = labelled_scenes(CLUTTER_TASK, n_fit, CALIBRATION_SEED)
        ids = [f"zeroshot-calibration-{k:05d}" for k in range(n_fit)]
        fitted_on = f"{n_fit} cluttered scenes of seed {CALIBRATION_SEED} (no test or figure uses it)"
        test_set = "zeroshot-test"
    else:
        recipe, prompts = RECIPES[name], None
        train = embedded_arrays(recipe.dataset)
        val_rows = split_validation(recipe, len(train.labels))[0].tolist()
        images, ids = [train.images[i] for i in val_rows], [train.ids[i] for i in val_rows]
        fit_labels = np.asarray(train.labels)[val_rows]
        fitted_on = f"embedded:{recipe.dataset} validation rows, n={len(val_rows)}"
        test_set = TEST_SETS[name]
    fit_errors = _class_errors(clf, images, ids, prompts, progress, f"{name}: fit")
    cal = Calibrator("temperature", n_elements=noise_elements(clf)).fit(fit_errors, fit_labels)

    test = embedded_arrays(test_set)
    n = min(n_heldout, len(test.labels))
    held_errors = _class_errors(clf, test.images[:n], test.ids[:n], prompts, progress, f"{name}: held-out test")
    held_labels = np.asarray(test.labels)[:n]
    eq6 = per_element_temperature(1.0, noise_elements(clf))

    def metrics(temperature: float) -> dict:
        return calibration_metrics(uncalibrated_probabilities(held_errors, temperature), held_labels)

    entry = {"temperature": cal.temperature, "paper_temperature": cal.paper_temperature, "fitted_on": fitted_on,
             "settings": {k: v for k, v in FIT_SETTINGS.method_dict().items()},
             "scale_keys": list(SCALE_KEYS),
             "heldout": {"dataset": f"embedded:{test_set}", "n": n,
                         "card_temperature": metrics(cal.temperature), "eq6": metrics(eq6),
                         "per_element_t1": metrics(1.0)}}
    card = folder / "training.json"
    facts = json.loads(card.read_text())
    facts["calibration"] = entry
    card.write_text(json.dumps(facts, indent=2, default=str) + "\n")
    readme = folder / "README.md"  # the card's table of facts gains the row write_card would have written
    if readme.is_file():
        rows = [line for line in readme.read_text().splitlines() if not line.startswith("| calibration |")]
        readme.write_text("\n".join(rows + [f"| calibration | {json.dumps(entry, default=str)} |"]) + "\n")
    return entry
