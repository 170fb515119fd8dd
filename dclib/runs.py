"""Evaluate whole datasets into a run folder: resumable, deterministic, distributed, nothing lost.

A run folder holds::

    config.json        the full configuration, library versions and the model's identity
    parts/             rank{R}-{seq}.parquet: finished rows, appended atomically by each process
    results.parquet    one row per image, sorted by dataset index (rebuilt from the parts; deterministic)
    timings.parquet    wall-clock seconds and the batch size used per image (not deterministic, kept apart)

Every process appends the rows it finishes to small part files, written to a temporary name, fsynced and
renamed into place, so a part is either whole or absent. On start the images already present are skipped; at
the end rank 0 merges the parts (deduplicated by dataset index) into ``results.parquet``. Killing a run at any
moment and rerunning the same command loses no finished image, duplicates none and gives a byte-identical
``results.parquet``: the noise of every image is keyed by the seed and the image's id (:mod:`dclib.noise`), so
no result depends on the order of images, the number of processes or where a run was interrupted.

Launch with several processes through accelerate or torchrun: ``torchrun --nproc_per_node 2 -m dclib evaluate
...`` or ``accelerate launch --multi_gpu --num_processes 2 -m dclib evaluate ...``; process ``r`` of ``n`` takes
the remaining images ``r, r + n, ...``.
"""
from __future__ import annotations

import contextlib
import datetime
import errno
import hashlib
import io
import json
import os
import platform
import shutil
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .errors import DclibError, InputError, NonFiniteError, check_finite
from .prompts import DEFAULT_TEMPLATE

CONFIG = "config.json"
RESULTS = "results.parquet"
TIMINGS = "timings.parquet"
PARTS = "parts"
FORMAT = "dclib-run/1"
#: config.json keys that may differ between runs into the same folder (a warning, not a refusal).
RUNTIME_KEYS = ("versions", "runtime")
MIN_FREE_BYTES = 16 * 2**20


def _warn(message: str) -> None:
    print(f"dclib: warning: {message}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------ schema / parquet
def results_schema(save_errors: bool):
    """The fixed column layout of ``results.parquet`` (the error columns only with ``save_errors``)."""
    import pyarrow as pa

    fields = [
        pa.field("index", pa.int64(), nullable=False),
        pa.field("id", pa.string(), nullable=False),
        pa.field("label", pa.int64()),
        pa.field("prediction", pa.int64()),
        pa.field("prediction_name", pa.string()),
        pa.field("best_conditioning", pa.int64()),
        pa.field("correct", pa.bool_()),
        pa.field("status", pa.string(), nullable=False),
        pa.field("reason", pa.string()),
        pa.field("evaluations", pa.int64(), nullable=False),
        pa.field("mean_errors", pa.list_(pa.float64())),
        pa.field("n_samples", pa.list_(pa.int32())),
    ]
    if save_errors:
        fields += [
            pa.field("errors", pa.list_(pa.float32())),  # row-major [conditioning, sample], NaN where pruned
            pa.field("errors_shape", pa.list_(pa.int32())),
            pa.field("timesteps", pa.list_(pa.int32())),
            pa.field("repeats", pa.list_(pa.int32())),
        ]
    return pa.schema(fields)


def _part_schema(save_errors: bool):
    import pyarrow as pa

    schema = results_schema(save_errors)
    for f in (pa.field("seconds", pa.float64()), pa.field("batch_size", pa.int32()), pa.field("rank", pa.int32())):
        schema = schema.append(f)
    return schema


def _timings_schema():
    import pyarrow as pa

    return pa.schema([pa.field("index", pa.int64(), nullable=False), pa.field("seconds", pa.float64()),
                      pa.field("batch_size", pa.int32()), pa.field("rank", pa.int32())])


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_parquet_atomic(table, path: str | Path) -> None:
    """Write a table deterministically (fixed options, no pandas metadata, one row group) and atomically:
    a temporary name in the same folder, fsync, ``os.replace``, fsync of the folder."""
    import pyarrow.parquet as pq

    path = Path(path)
    tmp = path.parent / f".{path.name}.tmp-{os.getpid()}"
    try:
        pq.write_table(table.combine_chunks(), tmp, compression="zstd", compression_level=3,
                       row_group_size=max(len(table), 1), use_dictionary=True, write_statistics=True,
                       version="2.6", data_page_version="1.0", store_schema=True)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _fsync_dir(path.parent)


def _write_text_atomic(path: Path, text: str) -> None:
    tmp = path.parent / f".{path.name}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


# ------------------------------------------------------------------------------------------ the store
def _part_files(run_dir: Path) -> list[Path]:
    folder = run_dir / PARTS
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.glob("rank*-*.parquet") if not p.name.startswith("."))


def _read_parquet(path: Path, columns=None):
    import pyarrow.parquet as pq

    try:
        return pq.read_table(path, columns=columns)
    except Exception as err:  # a part copied by hand and cut short, a disk error ...
        _warn(f"ignoring unreadable result file {path}: {str(err).splitlines()[0] if str(err) else err}")
        return None


def _dedupe(table):
    """One row per dataset index: an ``ok`` row wins over a ``failed`` one, then the earliest source."""
    import pyarrow as pa

    if len(table) == 0:
        return table
    index = table["index"].to_numpy()
    failed = np.asarray(table["status"].to_pylist()) != "ok"
    source = np.arange(len(table))
    order = np.lexsort((source, failed, index))
    sorted_index = index[order]
    keep = np.ones(len(order), dtype=bool)
    keep[1:] = sorted_index[1:] != sorted_index[:-1]
    return table.take(pa.array(order[keep]))


def read_store(run_dir: str | Path, save_errors: bool | None = None):
    """(results, timings) tables from ``results.parquet``/``timings.parquet`` and every part, one row per
    dataset index, sorted by index. Does not write anything."""
    import pyarrow as pa

    run_dir = Path(run_dir)
    if save_errors is None:
        save_errors = bool(read_config(run_dir).get("save_errors", False))
    schema, tschema = results_schema(save_errors), _timings_schema()
    results, timings = [], []
    if (run_dir / RESULTS).exists():
        t = _read_parquet(run_dir / RESULTS)
        if t is not None:
            results.append(t.select(schema.names).cast(schema))
    if (run_dir / TIMINGS).exists():
        t = _read_parquet(run_dir / TIMINGS)
        if t is not None:
            timings.append(t.select(tschema.names).cast(tschema))
    for part in _part_files(run_dir):
        t = _read_parquet(part)
        if t is None:
            continue
        results.append(t.select(schema.names).cast(schema))
        timings.append(t.select(tschema.names).cast(tschema))
    res = pa.concat_tables(results) if results else schema.empty_table()
    tim = pa.concat_tables(timings) if timings else tschema.empty_table()
    res = _dedupe(res)
    if len(tim):  # the latest timing of an image (a rerun after a crash measured it again)
        index = tim["index"].to_numpy()[::-1]
        _, first = np.unique(index, return_index=True)
        tim = tim.take(pa.array(len(tim) - 1 - first))
    return res.combine_chunks(), tim.combine_chunks()


def merge(run_dir: str | Path, write: bool = True):
    """Merge the parts into ``results.parquet`` and ``timings.parquet`` (atomically, only when they change).
    Returns (results, timings)."""
    run_dir = Path(run_dir)
    results, timings = read_store(run_dir)
    if write:
        for table, name in ((results, RESULTS), (timings, TIMINGS)):
            path = run_dir / name
            current = _read_parquet(path) if path.exists() else None
            if current is None or not current.equals(table):
                write_parquet_atomic(table, path)
    return results, timings


def load_results(run_dir: str | Path, merge_parts: bool = True):
    """The results as a pandas DataFrame (one row per image), the timings joined in as ``seconds``."""
    results, timings = merge(run_dir, write=False) if merge_parts else read_store(run_dir)
    df = results.to_pandas()
    t = timings.to_pandas().set_index("index")
    df["seconds"] = df["index"].map(t["seconds"]) if len(t) else np.nan
    return df


def error_matrix(row) -> np.ndarray:
    """A saved row's raw errors [n_conditionings, n_samples] (NaN where pruned); needs ``--save-errors``."""
    return np.asarray(row["errors"], dtype=np.float32).reshape([int(v) for v in row["errors_shape"]])


# ------------------------------------------------------------------------------------------ config
def read_config(run_dir: str | Path) -> dict:
    path = Path(run_dir) / CONFIG
    if not path.exists():
        raise InputError(f"{run_dir} is not a dclib run folder (no {CONFIG})")
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise InputError(f"cannot read {path}: {err}") from None


def _short(value: Any, width: int = 60) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= width else text[: width - 3] + "..."


def compare_configs(existing: dict, new: dict) -> tuple[list[str], list[str]]:
    """(differing result-defining keys, differing runtime keys such as versions)."""
    strict, soft = [], []
    for key in sorted(set(existing) | set(new)):
        if existing.get(key) == new.get(key):
            continue
        if key in RUNTIME_KEYS:
            sub_a, sub_b = existing.get(key) or {}, new.get(key) or {}
            soft += [f"{key}.{k} ({_short(sub_a.get(k), 30)} -> {_short(sub_b.get(k), 30)})"
                     for k in sorted(set(sub_a) | set(sub_b)) if sub_a.get(k) != sub_b.get(k)]
        else:
            strict.append(key)
    return strict, soft


def versions() -> dict:
    out = {"python": platform.python_version()}
    for name in ("dclib", "diffusers", "torch", "transformers", "accelerate", "datasets", "pyarrow", "numpy"):
        try:
            from importlib.metadata import version

            out[name] = version(name)
        except Exception:
            out[name] = None
    return out


def hash_model_folder(path: str | Path) -> str:
    """sha256 over a diffusers pipeline folder's model_index.json and the files of its components (weights,
    configs, tokenizer files), each hashed with its relative path."""
    root = Path(path)
    index = root / "model_index.json"
    files: list[Path] = []
    if index.exists():
        spec = json.loads(index.read_text())
        components = [k for k, v in spec.items() if not k.startswith("_") and isinstance(v, list) and v
                      and v[0] is not None]
        files = [index] + sorted(f for c in components if (root / c).is_dir() for f in (root / c).rglob("*")
                                 if f.is_file() and not any(p.startswith(".") for p in f.relative_to(root).parts))
    else:
        files = sorted(f for f in root.rglob("*")
                       if f.is_file() and not any(p.startswith(".") for p in f.relative_to(root).parts))
    h = hashlib.sha256()
    for f in files:
        h.update(f.relative_to(root).as_posix().encode() + b"\0")
        with open(f, "rb") as stream:
            for block in iter(lambda: stream.read(1 << 22), b""):
                h.update(block)
        h.update(b"\0")
    return h.hexdigest()


def model_identity(model: str | None, revision: str | None = None) -> dict:
    """Hub id + the cached snapshot's commit hash, or a sha256 over a local folder's weight files."""
    from .adapters.loading import resolve_model_path

    if model is None:
        return {"source": "in-memory"}
    path = resolve_model_path(model)
    if os.path.isdir(path):
        source = "embedded" if str(model).startswith("embedded:") else "local"
        return {"source": source, "sha256": hash_model_folder(path)}
    commit = None
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(model, "model_index.json", revision=revision)
        if isinstance(cached, str):
            commit = Path(cached).parent.name
    except Exception:
        pass
    return {"source": "hub", "hub_id": model, "revision": revision, "commit": commit}


# ------------------------------------------------------------------------------------------ datasets
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


def hub_offline() -> bool:
    """Whether the Hugging Face hub (models or datasets) is set offline by the environment."""
    return any(os.environ.get(v, "0") not in ("0", "", "false", "False")
               for v in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE"))


@contextlib.contextmanager
def _quiet_datasets():
    from datasets.utils import logging as dlog

    enabled = dlog.is_progress_bar_enabled()
    level = dlog.get_verbosity()
    dlog.disable_progress_bar()
    dlog.set_verbosity_error()
    try:
        yield
    finally:
        dlog.set_verbosity(level)
        if enabled:
            dlog.enable_progress_bar()


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
    import datasets

    spec, kind, data_dir = None, None, None
    if isinstance(dataset, (datasets.Dataset, datasets.DatasetDict)):
        kind, spec = "in-memory", f"<{type(dataset).__name__}>"
        ds, split = _pick_split(dataset, split, spec) if isinstance(dataset, datasets.DatasetDict) else (dataset, split)
    else:
        spec = os.fspath(dataset)
        if spec.startswith("embedded:"):
            from .data import load_embedded

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


def select_indices(n_rows: int, subset: str | int | Sequence[int] | None = None, subset_seed: int = 0,
                   limit: int | None = None) -> list[int]:
    """Dataset indices to evaluate, sorted: all, a file of indices, a list, or ``N`` drawn with ``subset_seed``;
    then the first ``limit``."""
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
        chosen = chosen[:limit]
    return chosen


def open_image(value, name: str):
    """A dataset cell (``{"bytes", "path"}``, bytes, PIL image, array or path) -> PIL image in RGB or L.
    Raises :class:`InputError` with a one-line reason naming the image by ``name``."""
    from PIL import Image, UnidentifiedImageError

    from .images import load_image, normalize_mode

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


# ------------------------------------------------------------------------------------------ run folder
def check_writable(run_dir: Path, tag: str = "0") -> None:
    """Create the folder and write, fsync and remove a probe file: a read-only or full disk fails here, in one
    line, before any work."""
    try:
        (run_dir / PARTS).mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise InputError(f"cannot create the output folder {run_dir}: {err.strerror or err}") from None
    probe = run_dir / f".write-probe-{tag}.tmp-{os.getpid()}"
    try:
        with open(probe, "wb") as f:
            f.write(b"\0" * 65536)
            f.flush()
            os.fsync(f.fileno())
        probe.unlink()
    except OSError as err:
        with contextlib.suppress(OSError):
            probe.unlink()
        what = "the disk is full" if err.errno == errno.ENOSPC else (err.strerror or str(err))
        raise InputError(f"cannot write to the output folder {run_dir}: {what}") from None
    free = shutil.disk_usage(run_dir).free
    if free < MIN_FREE_BYTES:
        raise InputError(f"cannot write to the output folder {run_dir}: only {free // 2**20} MiB free")


def remove_stale_temporaries(run_dir: Path) -> None:
    """Delete temporary files (``.NAME.tmp-PID``) left by processes of this machine that no longer run."""
    for folder in (run_dir, run_dir / PARTS):
        for tmp in folder.glob(".*.tmp-*"):
            pid = tmp.name.rsplit("-", 1)[-1]
            if not pid.isdigit() or int(pid) == os.getpid():
                continue
            try:
                os.kill(int(pid), 0)
            except ProcessLookupError:
                with contextlib.suppress(OSError):
                    tmp.unlink()
            except OSError:  # exists but not ours to signal: alive
                pass


@contextlib.contextmanager
def _rank_lock(run_dir: Path, rank: int):
    """One writer per rank and folder: a second ``evaluate`` into the same folder fails instead of racing."""
    try:
        import fcntl
    except ImportError:  # Windows
        yield
        return
    handle = open(run_dir / f".lock-rank{rank}", "a+")
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise InputError(f"another process is writing to {run_dir} (rank {rank}); wait for it or stop it") \
                from None
        yield
    finally:
        handle.close()


@contextlib.contextmanager
def _sigterm_as_interrupt():
    """SIGTERM (what torchrun sends the other ranks when one fails) unwinds like Ctrl-C, so rows are flushed."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class PartWriter:
    """Buffers finished rows and appends them as ``parts/rank{R}-{seq}.parquet``, atomically."""

    def __init__(self, run_dir: Path, rank: int, save_errors: bool, flush_rows: int, flush_seconds: float):
        self.folder = run_dir / PARTS
        self.rank = rank
        self.schema = _part_schema(save_errors)
        self.flush_rows = max(1, int(flush_rows))
        self.flush_seconds = float(flush_seconds)
        self.rows: list[dict] = []
        self.last = time.monotonic()
        seqs = [int(p.stem.split("-")[1]) for p in self.folder.glob(f"rank{rank}-*.parquet")
                if p.stem.split("-")[1].isdigit()]
        self.seq = max(seqs, default=-1) + 1
        for stale in self.folder.glob(f".rank{rank}-*.parquet.tmp-*"):  # left by a killed run of this rank
            with contextlib.suppress(OSError):
                stale.unlink()
        self.written = 0

    def add(self, row: dict) -> None:
        self.rows.append(row)
        if len(self.rows) >= self.flush_rows or time.monotonic() - self.last >= self.flush_seconds:
            self.flush()

    def flush(self) -> None:
        import pyarrow as pa

        self.last = time.monotonic()
        if not self.rows:
            return
        table = pa.Table.from_pylist(self.rows, schema=self.schema)
        path = self.folder / f"rank{self.rank}-{self.seq:06d}.parquet"
        try:
            write_parquet_atomic(table, path)
        except OSError as err:
            what = "the disk is full" if err.errno == errno.ENOSPC else (err.strerror or str(err))
            raise DclibError(f"cannot write results to {path}: {what}; finished images are kept in "
                             f"{self.folder}: fix this and rerun the same command to continue") from None
        self.seq += 1
        self.written += len(self.rows)
        self.rows = []


# ------------------------------------------------------------------------------------------ evaluation
def _is_oom(err: BaseException) -> bool:
    import torch

    oom = getattr(torch, "OutOfMemoryError", None) or torch.cuda.OutOfMemoryError
    return isinstance(err, (oom, torch.cuda.OutOfMemoryError)) or (
        isinstance(err, RuntimeError) and "out of memory" in str(err).lower())


def _free_accelerator_memory() -> None:
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def expected_scored_pairs(schedule, n_conditionings: int, num_train_timesteps: int) -> int:
    """How many (conditioning, sample) errors a schedule produces: every other entry is NaN (pruned)."""
    if not hasattr(schedule, "keep"):
        return None  # statistical pruning: known only after the run
    alive, pairs = n_conditionings, 0
    for keep, plan in zip(schedule.keep, schedule.stage_plans(num_train_timesteps)):
        if len(plan) and alive:
            pairs += alive * len(plan)
        alive = min(keep, alive)
    return pairs


def label_mapping(label_names: list[str] | None, class_names: Sequence[str]) -> tuple[str, list[int] | None]:
    """Dataset label -> model class index: by name when every dataset class name is a model class name (so a
    folder's sorted subfolder names or a differently ordered dataset still line up), else by index."""
    names = list(class_names)
    if label_names and all(n in names for n in label_names):
        table = [names.index(n) for n in label_names]
        return ("by-name", table) if table != list(range(len(table))) else ("by-index", None)
    return "by-index", None


def _distributed_state(device):
    import torch
    from accelerate import PartialState

    cpu = (str(device).startswith("cpu") or (device in (None, "auto") and not torch.cuda.is_available())
           or os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true"))
    # A long timeout: ranks meet only at the start and the end, and one may have more images left than another.
    return PartialState(cpu=cpu, timeout=datetime.timedelta(days=7))


def evaluate(model=None, dataset=None, out=None, *, prompts=None, labels=None, template: str = DEFAULT_TEMPLATE,
             schedule: str | int = 100,
             n_trials: int = 1, loss: str = "l2", objective: str = "uniform", guidance: float = 0.0, crop: int = 0,
             noise: str = "normal", seed: int = 0, batch_size: "int | str" = "auto", dtype: str = "float32",
             device: str | None = "auto", resolution: int | None = None, revision: str | None = None,
             autocast: str | None = None, compile: bool | str = False, lora: str | None = None,
             split: str | None = None, subset=None,
             subset_seed: int = 0,
             limit: int | None = None,
             image_column: str | None = None, label_column: str | None = None, save_errors: bool = False,
             retry_failed: bool = False, flush_rows: int = 16, flush_seconds: float = 30.0,
             progress: bool = True, classifier=None) -> dict | None:
    """Classify every selected image of a dataset into the run folder ``out``; resumable and distributed.

    ``model`` is a hub id, a local pipeline folder or ``embedded:NAME`` (or pass a loaded ``classifier``);
    ``lora`` loads LoRA weights into its denoiser (recorded in the run's config, so a resume must use the same).
    ``dataset`` is ``embedded:NAME``, an image folder (one subfolder per class), a ``save_to_disk`` folder, a
    Hugging Face dataset id (``split``) or a ``datasets.Dataset``. ``subset`` is a file of indices, a list, or a
    number of rows drawn with ``subset_seed``; ``limit`` keeps the first rows of the selection.

    Returns the summary (see :func:`summarize_run`) on the main process, None on the others.
    """
    from tqdm import tqdm

    from .classifier import DiffusionClassifier
    from .noise import NoiseDistribution
    from .plan import Schedule
    from .scoring import ScoreOptions

    if out is None or dataset is None or (model is None and classifier is None):
        raise InputError("evaluate needs a model, a dataset and an output folder")
    if batch_size != "auto" and (not isinstance(batch_size, int) or batch_size < 1):
        raise InputError("batch_size must be a positive integer or 'auto'")
    check_finite("flush_seconds", flush_seconds)  # NaN would never flush by time
    # Cheap validation first: a typo fails before any loading.
    sched = Schedule.parse(schedule, n_trials)
    options = ScoreOptions(loss=loss, objective=objective, guidance=guidance, crop=crop)
    dist = NoiseDistribution.parse(noise)

    state = _distributed_state(device)
    rank, world, main = state.process_index, state.num_processes, state.is_main_process
    run_dir = Path(out).expanduser().absolute()
    check_writable(run_dir, f"rank{rank}")

    with _rank_lock(run_dir, rank):
        if main:
            remove_stale_temporaries(run_dir)
        with state.main_process_first():  # rank 0 builds any dataset cache, the others reuse it
            source = open_dataset(dataset, split, image_column, label_column)
        selection = select_indices(len(source.dataset), subset, subset_seed, limit)

        if classifier is None:
            if world > 1 and device in (None, "auto", "cuda"):
                device = str(state.device)
            classifier = DiffusionClassifier.from_pretrained(model, torch_dtype=dtype, device=device,
                                                             resolution=resolution, revision=revision,
                                                             autocast=autocast, compile=compile, lora=lora)
        adapter = classifier.adapter
        if batch_size == "auto":
            from .scoring import auto_batch_size

            batch_size = auto_batch_size(adapter)
        model = model if model is not None else adapter.model_id
        if model is not None and os.path.isdir(os.fspath(model)):
            model = os.path.abspath(os.fspath(model))  # the same folder, whatever the working directory
        # embedded sets may carry prompts; else a text model gets one prompt per dataset class from `template`
        conds = classifier.conditionings(prompts, labels, dataset=source.spec, label_names=source.label_names,
                                         template=template)
        mapping, label_table = label_mapping(source.label_names, conds.class_names)

        config = {
            "format": FORMAT,
            "model": model,
            "model_identity": model_identity(model, revision) if main else None,
            "revision": revision,
            "lora": adapter.lora,  # source and sha256 of LoRA weights loaded into the denoiser (None: none)
            "dtype": str(adapter.dtype).replace("torch.", ""),
            "autocast": (None if getattr(adapter, "autocast", None) is None
                         else str(adapter.autocast).replace("torch.", "")),
            "resolution": adapter.resolution,
            "dataset": source.spec,
            "dataset_kind": source.kind,
            "split": source.split,
            "image_column": source.image_column,
            "label_column": source.label_column,
            "dataset_rows": len(source.dataset),
            "ids_sha256": hashlib.sha256("\n".join(source.ids).encode()).hexdigest(),
            "subset": None if subset is None else str(subset) if isinstance(subset, (int, str)) else "list",
            "subset_seed": subset_seed,
            "limit": limit,
            "selection_sha256": hashlib.sha256(",".join(map(str, selection)).encode()).hexdigest(),
            "n_images": len(selection),
            "label_mapping": mapping,
            "conditionings": list(conds.values),
            "conditioning_classes": list(conds.class_idx),
            "class_names": list(conds.class_names),
            "schedule": str(sched),
            "n_trials": n_trials,
            "seed": seed,
            "noise": str(dist),
            **options.to_dict(),
            "save_errors": bool(save_errors),
            # how, not what: a resumed run may change these (a warning says its last bits may differ)
            "runtime": {"batch_size": batch_size, "device": str(adapter.device),
                        "compile": getattr(adapter, "compile_mode", None)},
            "versions": versions(),
        }
        if isinstance(subset, str) and os.path.isfile(subset):
            config["subset"] = os.path.abspath(subset)
        config = json.loads(json.dumps(config))  # tuples -> lists, as read back from the file
        _check_or_write_config(run_dir, config, state)

        # Which images are left: read by every rank before anyone writes, then shared out evenly.
        results, _ = read_store(run_dir, save_errors)
        statuses = dict(zip(results["index"].to_pylist(), results["status"].to_pylist()))
        done = {i for i, s in statuses.items() if s == "ok" or not retry_failed}
        state.wait_for_everyone()
        remaining = [i for i in selection if i not in done]
        mine = remaining[rank::world]

        writer = PartWriter(run_dir, rank, save_errors, flush_rows, flush_seconds)
        expected = expected_scored_pairs(sched, len(conds), adapter.num_train_timesteps)
        classify_kwargs = dict(prompts=conds, schedule=sched, n_trials=n_trials, seed=seed, loss=loss,
                               objective=objective, guidance=guidance, crop=crop, noise=dist)
        current_bs = batch_size
        bar = tqdm(total=len(mine), desc="evaluate" if world == 1 else f"evaluate (rank 0 of {world})",
                   unit="img", disable=not (progress and main), file=sys.stderr, dynamic_ncols=True)
        try:
            with _sigterm_as_interrupt():
                for index in mine:
                    started = time.perf_counter()
                    row, current_bs = _evaluate_one(classifier, source, index, classify_kwargs, current_bs,
                                                    expected, label_table, conds, save_errors)
                    row.update(seconds=time.perf_counter() - started, batch_size=current_bs, rank=rank)
                    writer.add(row)
                    bar.update(1)
        finally:
            bar.close()
            writer.flush()
        state.wait_for_everyone()
        if not main:
            return None
        merge(run_dir)
        return summarize_run(run_dir)


def _check_or_write_config(run_dir: Path, config: dict, state) -> None:
    path = run_dir / CONFIG
    if path.exists():
        existing = read_config(run_dir)
        if state.is_main_process or state.num_processes == 1:
            new = config
        else:  # only rank 0 hashes the model; compare the rest
            new = {**config, "model_identity": existing.get("model_identity")}
        strict, soft = compare_configs(existing, new)
        if strict:
            details = ", ".join(f"{k} ({_short(existing.get(k), 40)} -> {_short(new.get(k), 40)})" for k in strict)
            raise InputError(f"{run_dir} holds a run with a different configuration: {details}; use another "
                             "--out, or the original options to resume")
        if soft and state.is_main_process:
            _warn(f"resuming {run_dir} with different " + ", ".join(soft)
                  + " (results may differ in the last bits from the earlier images)")
    state.wait_for_everyone()
    if state.is_main_process and not path.exists():
        _write_text_atomic(path, json.dumps(config, indent=2, sort_keys=True) + "\n")
    state.wait_for_everyone()


def _evaluate_one(classifier, source: DatasetSource, index: int, classify_kwargs: dict, batch_size: int,
                  expected_pairs: int, label_table, conds, save_errors: bool) -> tuple[dict, int]:
    """One image -> (row, batch size to use from now on). Bad images and non-finite errors become failed rows;
    on out-of-memory the batch size is halved and the image retried."""
    cell = source.dataset[index]
    image_id = source.ids[index]
    raw_label = cell[source.label_column]
    if isinstance(raw_label, str):  # a label column holding class names
        if raw_label not in conds.class_names:
            raise InputError(f"image {image_id} has label {raw_label!r}, which is not a class of the model "
                             f"({', '.join(conds.class_names[:10])}{' ...' if conds.n_classes > 10 else ''})")
        label = conds.class_names.index(raw_label)
    else:
        label = None if raw_label is None or int(raw_label) < 0 else int(raw_label)
        if label is not None and label_table is not None:
            label = label_table[label] if label < len(label_table) else label
    row = {"index": int(index), "id": image_id, "label": label, "prediction": None, "prediction_name": None,
           "best_conditioning": None, "correct": None, "status": "failed", "reason": None, "evaluations": 0,
           "mean_errors": None, "n_samples": None}
    if save_errors:
        row.update(errors=None, errors_shape=None, timesteps=None, repeats=None)
    try:
        pixels = classifier.adapter.preprocess(open_image(cell[source.image_column], image_id))
    except InputError as err:
        row["reason"] = str(err)
        return row, batch_size
    except (OSError, ValueError, SyntaxError) as err:  # PIL failing while resizing a damaged image
        row["reason"] = f"unreadable image {image_id}: {err}"
        return row, batch_size
    while True:
        try:
            result = classifier.classify(pixels, image_id=image_id, batch_size=batch_size, **classify_kwargs)
            break
        except NonFiniteError as err:
            row["reason"] = f"non-finite errors ({err})"
            return row, batch_size
        except Exception as err:
            if not _is_oom(err):
                raise
            _free_accelerator_memory()
            if batch_size == 1:
                row["reason"] = "out of memory at batch size 1"
                return row, batch_size
            batch_size = max(1, batch_size // 2)
            _warn(f"out of memory on image {image_id}: retrying with batch size {batch_size}")
    errors = np.asarray(result.errors)
    row["evaluations"] = int(result.evaluations)
    if save_errors:
        row.update(errors=errors.astype(np.float32).ravel().tolist(), errors_shape=list(errors.shape),
                   timesteps=list(result.plan.timesteps), repeats=list(result.plan.repeats))
    # paired pruning scores a data-dependent number of pairs: the decision reports how many it scored
    if int(np.isfinite(errors).sum()) != result.extra.get("scored_pairs", expected_pairs):
        row["reason"] = "non-finite errors (the model returned NaN or inf)"
        return row, batch_size
    row.update(status="ok", prediction=int(result.prediction), prediction_name=str(result.prediction_name),
               best_conditioning=int(result.best_conditioning),
               correct=None if label is None else bool(int(result.prediction) == label),
               mean_errors=[float(v) for v in result.mean_errors],
               n_samples=[int(v) for v in result.n_samples])
    return row, batch_size


# ------------------------------------------------------------------------------------------ summary
def summarize_run(run_dir: str | Path, write: bool = True) -> dict:
    """Accuracy (95% Clopper-Pearson), mean per-class accuracy, failures, evaluations and seconds per image of a
    run folder; merges the parts first (writing ``results.parquet`` when it is missing or stale)."""
    from .evaluate import clopper_pearson, summarize

    run_dir = Path(run_dir).expanduser().absolute()
    config = read_config(run_dir)
    results, timings = merge(run_dir, write=write)
    status = np.asarray(results["status"].to_pylist(), dtype=object)
    ok = status == "ok"
    labels = np.asarray([-1 if v is None else v for v in results["label"].to_pylist()], dtype=np.int64)
    preds = np.asarray([-1 if v is None else v for v in results["prediction"].to_pylist()], dtype=np.int64)
    evals = results["evaluations"].to_numpy()
    scored = ok & (labels >= 0)
    s = summarize(preds[scored], labels[scored])
    seconds = dict(zip(timings["index"].to_pylist(), timings["seconds"].to_pylist()))
    ok_index = results["index"].to_numpy()[ok]
    secs = [seconds[i] for i in ok_index.tolist() if seconds.get(i) is not None]
    names = config.get("class_names") or []
    per_class = []
    for c in np.unique(labels[scored]).tolist():
        sel = scored & (labels == c)
        k, n = int((preds[sel] == c).sum()), int(sel.sum())
        per_class.append({"label": c, "name": names[c] if 0 <= c < len(names) else str(c), "n": n, "correct": k,
                          "accuracy": k / n, "ci95": list(clopper_pearson(k, n))})
    reasons = results["reason"].to_pylist()
    ids = results["id"].to_pylist()
    failures = [{"index": int(i), "id": ids[j], "reason": reasons[j]}
                for j, i in enumerate(results["index"].to_pylist()) if status[j] != "ok"]
    n_images = int(config.get("n_images", len(results)))
    return {
        "run_dir": str(run_dir),
        "model": config.get("model"),
        "dataset": config.get("dataset"),
        "schedule": config.get("schedule"),
        "n_images": n_images,
        "done": len(results),
        "complete": len(results) >= n_images,
        "n": int(s.n),
        "correct": int(s.correct),
        "accuracy": float(s.accuracy) if s.n else None,
        "ci95": [float(v) for v in s.ci95],
        "mean_per_class_accuracy": float(s.mean_per_class_accuracy) if s.n else None,
        "failed": int((~ok).sum()),
        "unlabelled": int((ok & (labels < 0)).sum()),
        "evaluations_per_image": float(evals[ok].mean()) if ok.any() else 0.0,
        "seconds_per_image": float(np.mean(secs)) if secs else 0.0,
        "per_class": per_class,
        "failures": failures,
    }


def format_summary(summary: dict) -> str:
    """The human-readable report ``python -m dclib report`` prints."""
    def pct(v):
        return "n/a" if v is None else f"{100 * v:.2f}%"

    lines = [f"run {summary['run_dir']}",
             f"  model {summary['model']}, dataset {summary['dataset']}, schedule {summary['schedule']}",
             f"images: {summary['done']} of {summary['n_images']} done"
             + ("" if summary["complete"] else " (INCOMPLETE: rerun the evaluate command to finish)")
             + f"; {summary['n']} scored, {summary['failed']} failed"
             + (f", {summary['unlabelled']} unlabelled" if summary["unlabelled"] else ""),
             f"accuracy: {pct(summary['accuracy'])} ({summary['correct']}/{summary['n']}), 95% CI "
             f"[{pct(summary['ci95'][0])}, {pct(summary['ci95'][1])}] (Clopper-Pearson)",
             f"mean per-class accuracy: {pct(summary['mean_per_class_accuracy'])}",
             f"evaluations per image: {summary['evaluations_per_image']:.1f}; seconds per image: "
             f"{summary['seconds_per_image']:.3f}"]
    if summary["per_class"]:
        lines.append("per class:")
        for c in summary["per_class"]:
            lines.append(f"  {str(c['name'])[:30]:<30} {c['correct']:>5}/{c['n']:<5} {pct(c['accuracy']):>8}  "
                         f"[{pct(c['ci95'][0])}, {pct(c['ci95'][1])}]")
    if summary["failures"]:
        lines.append("failed:")
        for f in summary["failures"][:20]:
            lines.append(f"  #{f['index']} {f['id']}: {f['reason']}")
        if len(summary["failures"]) > 20:
            lines.append(f"  ... {len(summary['failures']) - 20} more (see results.parquet)")
    return "\n".join(lines)


def report(run_dir: str | Path) -> dict:
    """Summary of a run folder (merging its parts first); raises InputError for a folder that is not a run."""
    return summarize_run(run_dir)
