"""Where images come from: one way to open a dataset for ``dclib evaluate``, the notebooks and the benchmarks
(``embedded:NAME``, an image folder, a ``save_to_disk`` folder, a hub id, a ``datasets.Dataset``), the rows to
evaluate, one image cell as a PIL image with a one-line error, and dataset labels mapped to the model's classes."""
from __future__ import annotations

import contextlib
import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import datasets
import numpy as np
from datasets.utils import logging as datasets_logging
from PIL import Image, UnidentifiedImageError

from ..data import load_embedded
from ..errors import InputError
from ..hub import offline_by_environment, unreachable_reason
from ..images import load_image, normalize_mode

@dataclass
class DatasetSource:
    dataset: Any  # datasets.Dataset restricted to the columns needed, image column not decoded
    kind: str  # embedded, imagefolder, disk, hub, in-memory
    spec: str
    split: str | None
    image_column: str
    label_column: str
    ids: list[str]
    label_names: list[str] | None


#: Whether the Hugging Face hub (models or datasets) is set offline by the environment (dclib.hub's, under the
#: name dclib.runs has always exported).
hub_offline = offline_by_environment


@contextlib.contextmanager
def _quiet_datasets():
    enabled = datasets_logging.is_progress_bar_enabled()
    level = datasets_logging.get_verbosity()
    datasets_logging.disable_progress_bar()
    datasets_logging.set_verbosity_error()
    try:
        yield
    finally:
        datasets_logging.set_verbosity(level)
        if enabled:
            datasets_logging.enable_progress_bar()


def _pick_split(dd, split: str | None, spec: str):
    names = list(dd.keys())
    if split is not None:
        if split not in dd:
            raise InputError(f"dataset {spec!r} has no split {split!r}; splits: {', '.join(names)}")
        return dd[split], split
    if len(names) == 1:
        return dd[names[0]], names[0]
    if "test" in dd:
        return dd["test"], "test"
    raise InputError(f"dataset {spec!r} has several splits ({', '.join(names)}): pick one with --split")


def _looks_like_path(spec: str) -> bool:
    return spec.startswith(("/", ".", "~")) or spec.count("/") > 1 or os.sep != "/" and os.sep in spec


def open_dataset(dataset, split: str | None = None, image_column: str | None = None,
                 label_column: str | None = None) -> DatasetSource:
    """Resolve ``embedded:NAME``, a local image folder (labels from subfolder names), a folder written by
    ``save_to_disk``, a Hugging Face dataset id, or a ``datasets.Dataset``."""
    spec, kind, data_dir = None, None, None
    if isinstance(dataset, (datasets.Dataset, datasets.DatasetDict)):
        kind, spec = "in-memory", f"<{type(dataset).__name__}>"
        ds, split = _pick_split(dataset, split, spec) if isinstance(dataset, datasets.DatasetDict) else (dataset, split)
    else:
        spec = os.fspath(dataset)
        if spec.startswith("embedded:"):
            if split is not None:
                raise InputError("embedded datasets name their split (e.g. embedded:digits-test); drop --split")
            kind, ds = "embedded", load_embedded(spec)
        elif os.path.isdir(os.path.expanduser(spec)):
            data_dir = os.path.abspath(os.path.expanduser(spec))
            spec = data_dir
            if any(os.path.exists(os.path.join(data_dir, f)) for f in ("dataset_dict.json", "state.json")):
                kind = "disk"
                loaded = datasets.load_from_disk(data_dir)
            else:
                kind = "imagefolder"
                _check_class_folders(data_dir)
                try:
                    with _quiet_datasets():
                        loaded = datasets.load_dataset("imagefolder", data_dir=data_dir)
                except Exception as err:
                    raise InputError(f"cannot read image folder {data_dir}: "
                                     f"{str(err).splitlines()[0] if str(err) else type(err).__name__}") from None
            ds, split = _pick_split(loaded, split, spec) if isinstance(loaded, datasets.DatasetDict) \
                else (loaded, split)
        elif _looks_like_path(spec):
            raise InputError(f"dataset folder not found: {spec}")
        else:
            kind = "hub"
            reason = unreachable_reason(spec, "dataset")
            if reason:
                raise InputError(f"cannot load dataset {spec!r}: there is no local folder of that name, and {reason}")
            try:
                with _quiet_datasets():
                    loaded = datasets.load_dataset(spec, split=split)
            except Exception as err:
                if hub_offline():
                    hint = "it is not in the local Hugging Face cache and HF_DATASETS_OFFLINE/HF_HUB_OFFLINE is set"
                else:
                    hint = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
                raise InputError(f"cannot load dataset {spec!r}" + (f" (split {split!r})" if split else "")
                                 + f": {hint}") from None
            ds, split = _pick_split(loaded, split, spec) if isinstance(loaded, datasets.DatasetDict) \
                else (loaded, split)

    features = ds.features
    columns = list(features)

    def pick(wanted, default, kinds, what, flag):
        if wanted is not None:
            if wanted not in features:
                raise InputError(f"dataset has no column {wanted!r} ({flag}); columns: {', '.join(columns)}")
            return wanted
        if default in features:
            return default
        found = [c for c in columns if isinstance(features[c], kinds)]
        if len(found) != 1:
            which = f"several candidates ({', '.join(found)})" if found else f"columns: {', '.join(columns)}"
            raise InputError(f"cannot tell which is the {what} column ({which}); name it with {flag}")
        return found[0]

    image_col = pick(image_column, "image", (datasets.Image,), "image", "--image-column")
    label_col = pick(label_column, "label", (datasets.ClassLabel,), "label", "--label-column")
    if isinstance(features[label_col], datasets.Value) and features[label_col].dtype in ("string", "large_string"):
        # class names written out in the label column: name them once, so labels are matched by name like any
        ds = ds.class_encode_column(label_col)
        features = ds.features
    keep = [image_col, label_col] + (["id"] if "id" in features and "id" not in (image_col, label_col) else [])
    ds = ds.select_columns(keep)
    if isinstance(features[image_col], datasets.Image):
        ds = ds.cast_column(image_col, datasets.Image(decode=False))

    # Image ids key the noise: the id column, else (image folders) the file's path inside the folder, else
    # the row index. None of them depends on where the data lives or how it is split across processes.
    if "id" in features:
        ids = [str(v) for v in ds["id"]]
    elif kind == "imagefolder":
        paths = ds.with_format("arrow")[image_col]
        paths = [p for p in (paths.combine_chunks() if hasattr(paths, "combine_chunks") else paths)
                 .field("path").to_pylist()]
        ids = [Path(os.path.relpath(p, data_dir)).as_posix() if p else str(i) for i, p in enumerate(paths)]
    else:
        ids = [str(i) for i in range(len(ds))]
    names = getattr(features[label_col], "names", None)
    return DatasetSource(ds, kind, spec, split, image_col, label_col, ids, list(names) if names else None)


#: Folder names ``datasets`` reads as splits of an image folder (data/train/cat/1.png), not as classes.
SPLIT_FOLDERS = {"train", "test", "validation", "valid", "val", "dev", "eval"}


def _check_class_folders(data_dir: str) -> None:
    """An image folder is one subfolder per class (inside split folders, if any): say so in one line when it is
    flat or holds one class (``datasets`` would read either as a dataset with no label column)."""
    def subfolders(folder: Path) -> list[Path]:
        return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))

    top = subfolders(Path(data_dir))
    splits = top if top and all(p.name.lower() in SPLIT_FOLDERS for p in top) else [Path(data_dir)]
    for folder in splits:
        classes = subfolders(folder)
        if not classes:
            raise InputError(f"image folder {folder} has no class subfolders: put the images of each class in a "
                             "subfolder named after the class (cat/1.png, dog/2.png)")
        if len(classes) == 1:
            raise InputError(f"image folder {folder} has one class subfolder ({classes[0].name}): a classifier "
                             "needs at least two classes, one subfolder each")


def stratified_order(labels: Sequence, seed: int = 0) -> list[int]:
    """Positions of ``labels`` in an order whose every prefix is a seeded, class-balanced sample: each class's
    positions shuffled with ``seed``, then dealt out one per class per round (the classes in a seeded order). So
    the first N rows of a class-sorted folder hold every class, and the counts per class differ by at most one
    until a class runs out."""
    rng = np.random.default_rng(int(seed))
    by_class: dict = {}
    for position, label in enumerate(labels):
        by_class.setdefault(label, []).append(position)
    queues = [rng.permutation(by_class[k]).tolist() for k in sorted(by_class, key=str)]
    queues = [queues[i] for i in rng.permutation(len(queues))]
    order = []
    for depth in range(max((len(q) for q in queues), default=0)):
        order += [q[depth] for q in queues if depth < len(q)]
    return order


#: ``limit`` keeps a seeded stratified sample of the selection (the default), or its first rows.
LIMIT_MODES = ("stratified", "first")


def select_indices(n_rows: int, subset: str | int | Sequence[int] | None = None, subset_seed: int = 0,
                   limit: int | None = None, labels: Sequence | None = None, limit_mode: str = "stratified"
                   ) -> list[int]:
    """Dataset indices to evaluate, sorted: all, a file of indices, a list, or ``N`` drawn with ``subset_seed``;
    then ``limit`` of them: by default a sample stratified by ``labels`` (one per row; every row one stratum
    when None) drawn with ``subset_seed``, so a quick run on a folder sorted by class still sees every class;
    ``limit_mode="first"`` keeps the first ``limit`` instead."""
    if subset is None:
        chosen = list(range(n_rows))
    elif isinstance(subset, (list, tuple, np.ndarray, range)):
        chosen = [int(v) for v in subset]
    else:
        text = str(subset).strip()
        if os.path.isfile(text):
            try:
                raw = Path(text).read_text().replace(",", " ").split()
                chosen = [int(v) for v in raw if not v.startswith("#")]
            except (OSError, ValueError) as err:
                raise InputError(f"cannot read subset file {text}: {err}") from None
            if not chosen:
                raise InputError(f"subset file {text} holds no indices")
        elif text.isdigit():
            n = int(text)
            if not 0 < n <= n_rows:
                raise InputError(f"--subset {n}: the dataset has {n_rows} rows")
            rng = np.random.default_rng(int(subset_seed))
            chosen = rng.choice(n_rows, size=n, replace=False).tolist()
        else:
            raise InputError(f"--subset takes a file of dataset indices or a number of rows; "
                             f"{text!r} is neither (file not found)")
    bad = [i for i in chosen if not 0 <= i < n_rows]
    if bad:
        raise InputError(f"subset indices must lie in [0, {n_rows}); got {bad[:5]}")
    chosen = sorted(set(chosen))
    if limit is not None:
        if limit < 0:
            raise InputError("--limit must be >= 0")
        if limit_mode not in LIMIT_MODES:
            raise InputError(f"limit mode must be one of {', '.join(LIMIT_MODES)}; got {limit_mode!r}")
        if limit_mode == "first":
            chosen = chosen[:limit]
        else:
            strata = [labels[i] for i in chosen] if labels is not None else list(range(len(chosen)))
            chosen = sorted(chosen[p] for p in stratified_order(strata, subset_seed)[:limit])
    return chosen


def open_image(value, name: str):
    """A dataset cell (``{"bytes", "path"}``, bytes, PIL image, array or path) -> PIL image in RGB or L.
    Raises :class:`InputError` with a one-line reason naming the image by ``name``."""
    data = None
    if isinstance(value, dict):
        data, path = value.get("bytes"), value.get("path")
        if data is None:
            if not path:
                raise InputError(f"no image data in row {name}")
            try:
                with open(path, "rb") as f:
                    data = f.read()
            except FileNotFoundError:
                raise InputError(f"image not found: {name}") from None
            except OSError as err:
                raise InputError(f"unreadable image {name}: {err.strerror}") from None
    elif isinstance(value, (bytes, bytearray)):
        data = bytes(value)
    elif value is None:
        raise InputError(f"no image in row {name}")
    elif isinstance(value, list):
        value = np.asarray(value, dtype=np.uint8)
    if data is None:
        return load_image(value)
    try:
        with Image.open(io.BytesIO(data)) as opened:
            opened.load()
            image = opened.copy()
    except UnidentifiedImageError:
        raise InputError(f"not an image (unrecognised format): {name}") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise InputError(f"unreadable image {name}: {err}") from None
    return normalize_mode(image)


#: How dataset labels become the conditionings' classes: by class name (whenever the dataset names its classes),
#: or, asked for explicitly, label i is class i.
LABEL_MAPPINGS = ("by-name", "by-index")


def _listed(names, limit: int = 12) -> str:
    names = list(names)
    return ", ".join(map(str, names[:limit])) + (f" ... ({len(names)} in all)" if len(names) > limit else "")


def label_mapping(label_names: Sequence[str] | None, conditionings, mapping: str | None = None
                  ) -> tuple[str, list[int] | None]:
    """Dataset label -> class index of ``conditionings``: one rule for ``evaluate``, the notebooks and the
    benchmarks. Returns (the mapping used, a table label -> class index, None for by-index).

    By name, the default whenever the dataset names its classes: every dataset class must be the class of some
    conditioning, and every conditioning's class a dataset class. Anything else stops with one line naming both
    lists, since labels matched by position would give a plausible accuracy for the wrong classes (a folder
    ``circle/ square/`` scored against prompts for ``cat, dog``). By index (``mapping="by-index"``, only when
    asked): dataset label i is the conditionings' class i, for datasets whose labels carry no names or whose
    names are known to differ in spelling only.
    """
    if mapping not in (None, *LABEL_MAPPINGS):
        raise InputError(f"label mapping must be one of {', '.join(LABEL_MAPPINGS)}; got {mapping!r}")
    class_names = list(conditionings.class_names)
    scored = sorted(set(int(i) for i in conditionings.class_idx))  # the classes some conditioning stands for
    if mapping == "by-index":
        if label_names is not None and len(label_names) > len(class_names):
            raise InputError(f"label mapping by-index: the dataset has {len(label_names)} classes but the "
                             f"conditionings stand for {len(class_names)}")
        return "by-index", None
    if not label_names:
        raise InputError("the dataset's labels carry no class names, so they cannot be matched to the "
                         f"conditionings' classes ({_listed(class_names[i] for i in scored)}) by name; if label i "
                         "is class i, say so with --label-mapping by-index (label_mapping='by-index')")
    label_names = [str(n) for n in label_names]
    if len(set(label_names)) != len(label_names):
        raise InputError(f"the dataset names two classes alike ({_listed(label_names)}): cannot match by name")
    scored_names = {class_names[i] for i in scored}
    unmatched = [n for n in label_names if n not in scored_names]
    unused = [class_names[i] for i in scored if class_names[i] not in set(label_names)]
    if unmatched or unused:
        parts = ([f"dataset classes with no conditioning: {_listed(unmatched)}"] if unmatched else []) + \
                ([f"conditioning classes that are no dataset class: {_listed(unused)}"] if unused else [])
        raise InputError(f"the dataset's classes ({_listed(label_names)}) and the conditionings' classes "
                         f"({_listed(class_names[i] for i in scored)}) do not match by name ({'; '.join(parts)}); "
                         "give prompts or labels for exactly the dataset's classes, or --label-mapping by-index "
                         "(label_mapping='by-index') if label i is class i")
    return "by-name", [class_names.index(n) for n in label_names]
