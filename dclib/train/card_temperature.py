"""The temperature an embedded model's card carries, so its probabilities mean something by default.

Fitted by temperature scaling (:class:`dclib.calibration.Calibrator`) on the recipe's validation images: held out
from training (they only chose the best step) and used by no test, no book page and no ECE figure. The card also
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
from ..settings import ClassifySettings
from .pixel import RECIPES, split_validation
from .run import TEST_SETS

#: The settings the card temperature is fitted with: the classifier's defaults (schedule 100, l2, uniform).
FIT_SETTINGS = ClassifySettings()


def _class_errors(clf, images, ids, progress: bool, desc: str) -> np.ndarray:
    rows = []
    for image, image_id in tqdm(list(zip(images, ids)), desc=desc, disable=not progress):
        rows.append(clf.classify(image, settings=FIT_SETTINGS, image_id=image_id, batch_size=1000).class_errors)
    return np.stack(rows)


def fit_card_temperature(name: str, model: str | Path | None = None, n_heldout: int = 200,
                         progress: bool = True) -> dict:
    """Fit the temperature of embedded model ``name`` (a pixel recipe: digits, mnist, mnist-learned-variance) on
    its validation images, measure ECE on the first ``n_heldout`` test images, and write both into the card's
    ``training.json`` under ``calibration``. Returns that entry."""
    from ..data import embedded_arrays  # loads datasets: seconds, which the CLI's --help must not wait for

    if name not in RECIPES:
        raise ValueError(f"card temperatures are fitted for {', '.join(RECIPES)}; got {name!r}")
    recipe, folder = RECIPES[name], Path(model or EMBEDDED_DIR / name)
    clf = DiffusionClassifier.from_pretrained(str(folder))
    train = embedded_arrays(recipe.dataset)
    val_rows = split_validation(recipe, len(train.labels))[0].tolist()
    fit_errors = _class_errors(clf, [train.images[i] for i in val_rows], [train.ids[i] for i in val_rows],
                               progress, f"{name}: validation")
    fit_labels = np.asarray(train.labels)[val_rows]
    cal = Calibrator("temperature", n_elements=noise_elements(clf)).fit(fit_errors, fit_labels)

    test = embedded_arrays(TEST_SETS[name])
    n = min(n_heldout, len(test.labels))
    held_errors = _class_errors(clf, test.images[:n], test.ids[:n], progress, f"{name}: held-out test")
    held_labels = np.asarray(test.labels)[:n]
    eq6 = per_element_temperature(1.0, noise_elements(clf))

    def metrics(temperature: float) -> dict:
        return calibration_metrics(uncalibrated_probabilities(held_errors, temperature), held_labels)

    entry = {"temperature": cal.temperature, "paper_temperature": cal.paper_temperature,
             "fitted_on": f"embedded:{recipe.dataset} validation rows, n={len(val_rows)}",
             "settings": {k: v for k, v in FIT_SETTINGS.method_dict().items()},
             "scale_keys": list(SCALE_KEYS),
             "heldout": {"dataset": f"embedded:{TEST_SETS[name]}", "n": n,
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
