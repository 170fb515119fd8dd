"""The paper preset's preflight: before executing anything, name what the pages' parameters need that this machine
lacks (hub models and datasets missing from the local Hugging Face cache while the hub is offline, local folders and
class maps that do not exist), so a GPU run stops at once instead of hours in."""
from __future__ import annotations

import os

# Parameters that name models, and datasets, in a page's parameters.
MODEL_PARAMETERS = ("model", "models", "variants", "supervised_model", "weak_model", "sd_model", "contrastive",
                    "learned_variance_model", "discriminative")
DATASET_PARAMETERS = ("dataset", "supervised_dataset", "pairs", "tasks", "shifted")


class PreflightError(RuntimeError):
    pass


def missing_inputs(name: str, params: dict) -> list[str]:
    """What a page's parameters name that is missing: hub models and datasets not in the local Hugging Face cache
    (:func:`dclib.hub.in_local_cache`), and local folders and class maps (a path starting with ".", "/" or "~")."""
    from dclib.hub import in_local_cache

    missing = []
    for key, repo_type in [(k, "model") for k in MODEL_PARAMETERS] + [(k, "dataset") for k in DATASET_PARAMETERS]:
        values = params.get(key)
        values = list(values.values()) if isinstance(values, dict) else values  # shifted: {name: set}
        for value in values if isinstance(values, list) else [values]:
            if key == "tasks" and not isinstance(value, dict):
                continue  # Table 1's embedded task names
            if isinstance(value, dict):  # a dataset spec (Table 1's tasks, a shifted set) names its dataset
                class_map = value.get("class_map")
                if isinstance(class_map, str) and not os.path.exists(os.path.expanduser(class_map)):
                    missing.append(f"local file {value['class_map']!r} ({name}: {key}) does not exist")
                value = value.get("dataset")
            if not isinstance(value, str) or value.startswith("embedded:") or os.path.exists(os.path.expanduser(value)):
                continue
            if value.startswith((".", "/", "~")):
                missing.append(f"local folder {value!r} ({name}: {key}) does not exist")
            elif not in_local_cache(value, repo_type):
                missing.append(f"{repo_type} {value!r} ({name}: {key}) is not in the local Hugging Face cache")
    return missing


def preflight(pages: dict[str, dict], preset: str) -> None:
    """Offline, stop before any execution when a page (``pages``: name -> its parameters) names a hub model or
    dataset missing from the cache, or a local path that does not exist."""
    from dclib.hub import offline_by_environment

    for name, params in pages.items() if offline_by_environment() else ():
        missing = missing_inputs(name, params)
        if missing:
            how = ("; download it first (`hf download`) on a machine with network, as the hub is offline "
                   "(HF_HUB_OFFLINE=1)" if missing[0].endswith("cache") else "; see the README's GPU section")
            raise PreflightError(f"preset {preset}: {missing[0]}{how}"
                                 + (f"; {len(missing) - 1} more on this page" if len(missing) > 1 else ""))
