"""Every paper page re-run as a GPU user runs it, at tiny scale: papermill on a local Stable Diffusion folder, an
image folder with one subfolder per class and a prompt CSV (a DiT folder where a page needs a class-conditional
model, an SD3 folder for the flow-matching page), with MPLBACKEND=Agg as the Makefile exports it. Each page must
finish and show its figures. (notebooks/ runs the same pages on the embedded models with their own defaults.)
Table 4 / Fig. 6 (supervised_robustness) runs on the DiT folder against two saved transformers image classifiers,
with shifted image folders as ImageNet-A and ObjectNet come: fewer classes than the model, and classes that need a
class map.

Some pages also run where a user's data or parameters fall short of the page's defaults, and must say so and go on:
calibration on an image folder smaller than n_fit + n_test, timestep weighting with fewer timesteps than bins, the
model-versions page with two models (too few for its trend test). The loss-functions page takes the user's
model, dataset and prompts under the names every page uses, and must use them.

Each page runs on one thread (OMP_NUM_THREADS=1), so two pages run at once: the selected pages are started in
test order by a pool of two, and each test waits for its own page."""
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]

# page -> parameters besides model / dataset / prompts (the smallest that exercise every cell)
SMALL = {
    "quickstart": {"n_images": 3, "schedule": "2"},
    "single_timestep": {"n_images": 3, "n_timesteps": 2},
    "error_variance": {"n_images": 2, "n_noises": 2, "n_timesteps": 2, "n_accuracy_images": 3,
                       "accuracy_timesteps": 2, "timestep_counts": [1, 2]},
    "timestep_strategies": {"n_images": 3, "trial_counts": [1, 2]},
    "noise_sampling": {"n_images": 3, "n_timesteps": 2},
    "guidance": {"n_images": 3, "n_timesteps": 2, "weights": [0.0, 2.0]},
    "cropping": {"n_images": 3, "n_timesteps": 2, "crops": [0, 1]},
    "adaptive_evaluation": {"n_images": 3, "algorithm1": ["2", "4"], "adaptive": ["2,1:2,4"],
                            "paired": ["paired:4,strata=2"], "top_k": 2, "n_timed": 1, "batch_size": "auto"},
}
# class-conditional pages: a DiT folder (learned variance, as DiT-XL/2) on the same image folder
CLASS_CONDITIONAL = {
    "objective": {"n_images": 3, "n_timesteps": 2},
    # fewer timesteps than bins: the page fits 2 bins and says so
    "timestep_weighting": {"n_fit": 3, "n_test": 3, "n_timesteps": 2, "n_bins": 3},
    # the page's default sizes on the 6-image folder: it splits the 6 images (3 + 3) and says so
    "calibration": {"n_fit": 40, "n_test": 40, "n_timesteps": 2, "adaptive": "2,1:1,2"},
    "interpretability": {"n_images": 3, "n_steps": 2, "n_examples": 2},
}


@pytest.fixture(scope="module")
def user_setup(tmp_path_factory):
    from dclib.testing import save_image_folder, save_prompt_csv, save_tiny_image_classifier, save_tiny_models

    root = tmp_path_factory.mktemp("gpu-user")
    models = save_tiny_models(root / "models", ["sd", "dit", "sd3"])
    # Table 4's sets, named as the tiny DiT's classes (class_0 ... class_9): a clean set, a set of two of its
    # classes (ImageNet-A's case) and a set whose classes stand for several model classes through a map (ObjectNet's)
    dit_classes = [f"class_{i}" for i in range(10)]
    (root / "objectnet-map.json").write_text(json.dumps({"x": ["class_0", "class_2"], "y": "class_1"}))
    table4 = {"clean": save_image_folder(root / "imagenet", dit_classes[:3]),
              "shifted": {"imagenet-a": save_image_folder(root / "imagenet-a", dit_classes[1:3], seed=1),
                          "objectnet": {"dataset": save_image_folder(root / "objectnet", ["x", "y"], seed=2),
                                        "class_map": str(root / "objectnet-map.json")}},
              "discriminative": [save_tiny_image_classifier(root / f"resnet-{k}", dit_classes, seed=k)
                                 for k in range(2)]}
    # class-conditional pages: a folder of every one of the DiT's classes, as an ImageNet folder holds all 1000
    # (labels meet classes by name, and a folder of other names, or of some of the classes, is refused)
    dit_images = save_image_folder(root / "imagenet-all", dit_classes, per_class=1, seed=3)
    return {"sd": models["sd"], "dit": models["dit"], "sd3": models["sd3"], "images": save_image_folder(root / "pets"),
            "dit_images": dit_images,
            "prompts": save_prompt_csv(root / "pets.csv"), "table4": table4, "root": root}


def parameters_for(page: str, s: dict) -> dict:
    if page == "loss_functions":  # the zero-shot half under the shared names, the supervised half under its own
        return {"model": s["sd"], "dataset": s["images"], "prompts": s["prompts"], "n_images": 3,
                "supervised_model": s["dit"], "supervised_dataset": s["dit_images"], "n_supervised_images": 3,
                "n_timesteps": 2, "shuffle_seed": 0}
    if page == "version_sweep":
        return {"models": [s["sd"]] * 3, "variants": [s["sd"]], "dataset": s["images"], "prompts": s["prompts"],
                "n_images": 3, "n_timesteps": 2, "shuffle_seed": 0}
    if page == "version_sweep_two_models":  # too few for the trend test: accuracies, and a verdict saying why
        return {"models": [s["sd"]] * 2, "variants": [], "dataset": s["images"], "prompts": s["prompts"],
                "n_images": 3, "n_timesteps": 2, "shuffle_seed": 0}
    if page == "compositional":  # Winoground-style pairs (a save_to_disk folder or hub id works the same way)
        return {"model": s["sd"], "pairs": "embedded:shapes-wino", "per_swap": 1, "n_timesteps": 2}
    if page == "zero_shot_table":  # Table 1 on the user's dataset; no train split, so no features baseline
        return {"model": s["sd"], "dataset": s["images"], "prompts": s["prompts"], "n_images": 3, "schedule": "2",
                "n_generated": 1, "generation_steps": 2, "cnn_epochs": 1, "n_timestep_images": 2,
                "n_probe_timesteps": 2, "n_shared_noise_rows": 1, "batch_size": "auto"}
    if page == "supervised_robustness":  # a DiT folder against saved image classifiers, as the paper preset runs
        t4 = s["table4"]
        return {"model": s["dit"], "dataset": t4["clean"], "shifted": t4["shifted"],
                "discriminative": t4["discriminative"], "claim_set": "imagenet-a", "n_images": 4, "n_timesteps": 2,
                "shuffle_seed": 0}
    if page == "flow_matching":  # a local SD3 (flow-matching) folder
        return {"model": s["sd3"], "n_timesteps": 2, "n_logit_normal": 100}
    if page in CLASS_CONDITIONAL:
        extra = {"learned_variance_model": s["dit"]} if page == "objective" else {}
        return {"model": s["dit"], "dataset": s["dit_images"], "shuffle_seed": 0, **CLASS_CONDITIONAL[page], **extra}
    extra = {"sd_model": s["sd"]} if page == "quickstart" else {}
    # shuffle_seed: a seeded random subset of the images, as the paper preset takes on a hub dataset
    return {"model": s["sd"], "dataset": s["images"], "prompts": s["prompts"], "shuffle_seed": 0, **SMALL[page],
            **extra}


PAGES = [*SMALL, "loss_functions", "version_sweep", "version_sweep_two_models", *CLASS_CONDITIONAL, "compositional",
         "zero_shot_table", "supervised_robustness", "flow_matching"]
NOTEBOOK = {"version_sweep_two_models": "version_sweep"}  # a second run of a page, with other parameters


def run_page(page: str, setup: dict, folder: Path) -> subprocess.CompletedProcess:
    import yaml

    env = {**os.environ, "MPLBACKEND": "Agg", "DCLIB_RESULTS_DIR": str(folder / "results"),
           "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    env.pop("DCLIB_PRESET", None)
    notebook = ROOT / "notebooks" / f"{NOTEBOOK.get(page, page)}.ipynb"
    return subprocess.run([sys.executable, "-m", "papermill", str(notebook), str(folder / f"{page}.ipynb"),
                           "--cwd", str(folder), "--log-level", "WARNING", "--no-progress-bar",
                           "--parameters_yaml", yaml.safe_dump(parameters_for(page, setup))],
                          env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def page_runs(request, user_setup, tmp_path_factory):
    """page -> future of its papermill run, for the pages this session selected, two at a time."""
    test = test_page_runs_on_a_local_pipeline_image_folder_and_prompt_csv.__name__
    selected = [item.callspec.params["page"] for item in request.session.items
                if getattr(item, "originalname", None) == test and item.module.__name__ == __name__]
    pool = ThreadPoolExecutor(2)
    runs = {}
    for page in selected:
        folder = tmp_path_factory.mktemp(page)
        runs[page] = (pool.submit(run_page, page, user_setup, folder), folder)
    yield runs
    pool.shutdown(cancel_futures=True)


def printed(nb: dict) -> str:
    """Everything the executed notebook's code cells showed as text (printed lines, tables, Markdown)."""
    return "\n".join("".join(o.get("text", "")) + "".join("".join(v) for k, v in o.get("data", {}).items()
                                                           if k in ("text/plain", "text/markdown"))
                     for c in nb["cells"] if c["cell_type"] == "code" for o in c.get("outputs", []))


def check_what_the_page_said(page: str, nb: dict, results: Path, setup: dict) -> None:
    """The cases where the user's data or parameters fall short: each page goes on and says so in one line."""
    if page == "calibration":
        assert "The dataset has 10 images, fewer than n_fit + n_test = 80: fitting on the first 5 and judging on " \
               "the other 5." in printed(nb)
    if page == "timestep_weighting":
        assert "the plan has 2 timesteps per image: fitting 2 bins." in printed(nb)
    if page == "version_sweep_two_models":
        verdict = json.loads((results / "verdicts" / "version_sweep.json").read_text())
        assert verdict["outcome"] == "not detected"
        assert "at least 3 ordered settings" in verdict["comparisons"][0]["reason"]
        assert len(verdict["comparisons"][0]["counts"]["accuracies"]) == 2
        assert "not testable here" in printed(nb)
    if page == "loss_functions":  # the zero-shot half ran on the user's model, images and prompts (3 classes)
        zero_shot = pd.read_csv(results / "loss_functions.csv").query("kind == 'zero-shot'")
        assert set(zero_shot.model) == {setup["sd"]} and set(zero_shot.classes) == {3}, zero_shot
        assert setup["images"] in json.loads((results / "verdicts" / "loss_zero_shot.json").read_text())["setting"]


@pytest.mark.parametrize("page", PAGES)
def test_page_runs_on_a_local_pipeline_image_folder_and_prompt_csv(page, page_runs, user_setup):
    future, tmp_path = page_runs[page]
    proc = future.result()
    out = tmp_path / f"{page}.ipynb"
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    nb = json.loads(out.read_text())
    figures = [o for c in nb["cells"] if c["cell_type"] == "code" for o in c.get("outputs", [])
               if "image/png" in o.get("data", {})]
    assert figures, f"{page}: no figure in the executed notebook under MPLBACKEND=Agg"
    if page not in ("quickstart", "timestep_weighting", "calibration", "flow_matching"):  # the extensions record none
        assert list((tmp_path / "results" / "verdicts").glob("*.json")), f"{page}: no verdict recorded"
    check_what_the_page_said(page, nb, tmp_path / "results", user_setup)
