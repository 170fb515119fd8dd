"""The evaluate loop: classify every selected image of a dataset into a run folder, resumable and distributed.

Launch with several processes through accelerate or torchrun: ``torchrun --nproc_per_node 2 -m dclib evaluate
...`` or ``accelerate launch --multi_gpu --num_processes 2 -m dclib evaluate ...``; process ``r`` of ``n`` takes
the remaining images ``r, r + n, ...``. Ranks meet only at the start (configuration, which images are left) and
at the end (rank 0 merges the parts and summarizes).
"""
from __future__ import annotations

import contextlib
import datetime
import gc
import hashlib
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch
from accelerate import PartialState
from tqdm import tqdm

from ..classifier import DiffusionClassifier
from ..errors import InputError, NonFiniteError, check_finite
from ..prompts import DEFAULT_TEMPLATE, require_candidates
from ..scoring import resolve_batch_size
from ..label_tree import resolve_settings
from ..settings import ClassifySettings
from .options import LoadOptions, RunOptions, Selection, split_options
from .provenance import short_json, compare_configs, model_identity, versions
from .sources import DatasetSource, label_mapping as map_labels, open_dataset, open_image, select_indices
from .store import (CONFIG, FORMAT, PartWriter, rank_lock, warn, write_text_atomic, check_writable, merge,
                    read_config, read_store, remove_stale_temporaries)
from .summary import summarize_run

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


def _is_oom(err: BaseException) -> bool:
    oom = getattr(torch, "OutOfMemoryError", None) or torch.cuda.OutOfMemoryError
    return isinstance(err, (oom, torch.cuda.OutOfMemoryError)) or (
        isinstance(err, RuntimeError) and "out of memory" in str(err).lower())


def _free_accelerator_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _distributed_state(device):
    cpu = (str(device).startswith("cpu") or (device in (None, "auto") and not torch.cuda.is_available())
           or os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true"))
    # A long timeout: ranks meet only at the start and the end, and one may have more images left than another.
    return PartialState(cpu=cpu, timeout=datetime.timedelta(days=7))


def evaluate(model=None, dataset=None, out=None, *, prompts=None, labels=None, template: str = DEFAULT_TEMPLATE,
             settings: ClassifySettings | None = None, loading: LoadOptions | None = None,
             selection: Selection | None = None, run: RunOptions | None = None, classifier=None,
             **options) -> dict | None:
    """Classify every selected image of a dataset into the run folder ``out``; resumable and distributed.

    ``model`` is a hub id, a local pipeline folder or ``embedded:NAME`` (or pass a loaded ``classifier``).
    ``dataset`` is ``embedded:NAME``, an image folder (one subfolder per class), a ``save_to_disk`` folder, a
    Hugging Face dataset id or a ``datasets.Dataset``; ``prompts``, ``labels`` and ``template`` give the
    conditionings (else the dataset's prompt CSV, or one prompt per class name). The options come in groups
    (:mod:`dclib.runs.options`): ``loading`` (:class:`LoadOptions`: dtype, device, resolution, revision, autocast,
    compile, lora), ``selection`` (:class:`Selection`: split, subset, subset_seed, limit, limit_mode, image_column,
    label_column, label_mapping; see :func:`label_mapping`), ``run`` (:class:`RunOptions`: save_errors,
    retry_failed, flush_rows, flush_seconds, progress) and ``settings`` (:class:`dclib.settings.ClassifySettings`:
    how each image is classified). ``options`` takes any of their fields as flat keywords, put over the groups.

    Returns the summary (see :func:`summarize_run`) on the main process, None on the others.
    """
    if out is None or dataset is None or (model is None and classifier is None):
        raise InputError("evaluate needs a model, a dataset and an output folder")
    # Cheap validation first: a typo fails before any loading.
    loading, selection, run, settings = split_options(options, loading, selection, run, settings)
    check_finite("flush_seconds", run.flush_seconds)  # NaN would never flush by time

    state = _distributed_state(loading.device)
    rank, world, main = state.process_index, state.num_processes, state.is_main_process
    run_dir = Path(out).expanduser().absolute()
    check_writable(run_dir, f"rank{rank}")

    with rank_lock(run_dir, rank):
        if main:
            remove_stale_temporaries(run_dir)
        with state.main_process_first():  # rank 0 builds any dataset cache, the others reuse it
            source = open_dataset(dataset, selection.split, selection.image_column, selection.label_column)
        strata = (source.dataset[source.label_column]
                  if selection.limit is not None and selection.limit_mode == "stratified" else None)
        chosen = select_indices(len(source.dataset), selection.subset, selection.subset_seed, selection.limit, strata,
                                selection.limit_mode)

        if classifier is None:
            device = loading.device
            if world > 1 and device in (None, "auto", "cuda"):
                device = str(state.device)
            classifier = DiffusionClassifier.from_pretrained(
                model, torch_dtype=loading.dtype, device=device, resolution=loading.resolution,
                revision=loading.revision, autocast=loading.autocast, compile=loading.compile, lora=loading.lora)
        adapter = classifier.adapter
        batch_size = resolve_batch_size(adapter, settings.batch_size)
        model = model if model is not None else adapter.model_id
        if model is not None and os.path.isdir(os.fspath(model)):
            model = os.path.abspath(os.fspath(model))  # the same folder, whatever the working directory
        # embedded sets may carry prompts; else a text model gets one prompt per dataset class from `template`
        conds = classifier.conditionings(prompts, labels, dataset=source.spec, label_names=source.label_names,
                                         template=template)
        require_candidates(conds)
        mapping, label_table = map_labels(source.label_names, conds, selection.label_mapping)
        settings = resolve_settings(settings, classifier, conds)  # config.json records a named tree in indices
        config = _run_config(model, loading, selection, run, settings, adapter, source, chosen, conds, mapping,
                             batch_size, main)
        if mapping == "by-name" and label_table == list(range(len(label_table))) and (run_dir / CONFIG).exists() \
                and read_config(run_dir).get("label_mapping") == "by-index":
            config["label_mapping"] = "by-index"  # how runs written before names were required record the same labels
        _check_or_write_config(run_dir, config, state)

        # Which images are left: read by every rank before anyone writes, then shared out evenly.
        results, _ = read_store(run_dir, run.save_errors)
        statuses = dict(zip(results["index"].to_pylist(), results["status"].to_pylist()))
        done = {i for i, s in statuses.items() if s == "ok" or not run.retry_failed}
        state.wait_for_everyone()
        remaining = [i for i in chosen if i not in done]
        mine = remaining[rank::world]

        writer = PartWriter(run_dir, rank, run.save_errors, run.flush_rows, run.flush_seconds)
        classify_kwargs = dict(prompts=conds, settings=settings)
        current_bs = batch_size
        bar = tqdm(total=len(mine), desc="evaluate" if world == 1 else f"evaluate (rank 0 of {world})",
                   unit="img", disable=not (run.progress and main), file=sys.stderr, dynamic_ncols=True)
        try:
            with _sigterm_as_interrupt():
                for index in mine:
                    started = time.perf_counter()
                    row, current_bs = _evaluate_one(classifier, source, index, classify_kwargs, current_bs,
                                                    label_table, run.save_errors)
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


def _run_config(model, loading: LoadOptions, selection: Selection, run: RunOptions, settings: ClassifySettings,
                adapter, source: DatasetSource, chosen: list, conds, mapping: str, batch_size: int,
                main: bool) -> dict:
    """What config.json records: everything that decides the numbers (a resume must match it; see
    :func:`dclib.runs.provenance.compare_configs`), and under ``runtime`` how it ran (may change on resume)."""
    subset = selection.subset
    config = {
        "format": FORMAT,
        "model": model,
        "model_identity": model_identity(model, loading.revision) if main else None,
        "revision": loading.revision,
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
        "subset_seed": selection.subset_seed,
        "limit": selection.limit,
        "limit_mode": None if selection.limit is None else selection.limit_mode,
        "selection_sha256": hashlib.sha256(",".join(map(str, chosen)).encode()).hexdigest(),
        "n_images": len(chosen),
        "label_mapping": mapping,
        "conditionings": list(conds.values),
        "conditioning_classes": list(conds.class_idx),
        "class_names": list(conds.class_names),
        **settings.to_dict(),
        "save_errors": bool(run.save_errors),
        # how, not what: a resumed run may change these (a warning says its last bits may differ)
        "runtime": {"batch_size": batch_size, "device": str(adapter.device),
                    "compile": getattr(adapter, "compile_mode", None)},
        "versions": versions(),
    }
    if isinstance(subset, str) and os.path.isfile(subset):
        config["subset"] = os.path.abspath(subset)
    return json.loads(json.dumps(config))  # tuples -> lists, as read back from the file


def _check_or_write_config(run_dir: Path, config: dict, state) -> None:
    path = run_dir / CONFIG
    if path.exists():
        existing = read_config(run_dir)
        if "limit_mode" not in existing:  # written before limit took a stratified sample: it took the first rows
            existing["limit_mode"] = None if existing.get("limit") is None else "first"
        if state.is_main_process or state.num_processes == 1:
            new = config
        else:  # only rank 0 hashes the model; compare the rest
            new = {**config, "model_identity": existing.get("model_identity")}
        strict, soft = compare_configs(existing, new)
        if strict:
            details = ", ".join(f"{k} ({short_json(existing.get(k), 40)} -> {short_json(new.get(k), 40)})"
                                for k in strict)
            raise InputError(f"{run_dir} holds a run with a different configuration: {details}; use another "
                             "--out, or the original options to resume")
        if soft and state.is_main_process:
            warn(f"resuming {run_dir} with different " + ", ".join(soft)
                 + " (results may differ in the last bits from the earlier images)")
    state.wait_for_everyone()
    if state.is_main_process and not path.exists():
        write_text_atomic(path, json.dumps(config, indent=2, sort_keys=True) + "\n")
    state.wait_for_everyone()


def _evaluate_one(classifier, source: DatasetSource, index: int, classify_kwargs: dict, batch_size: int,
                  label_table, save_errors: bool) -> tuple[dict, int]:
    """One image -> (row, batch size to use from now on). Bad images and non-finite errors become failed rows;
    on out-of-memory the batch size is halved and the image retried."""
    cell = source.dataset[index]
    image_id = source.ids[index]
    raw_label = cell[source.label_column]  # an index: open_dataset class-encodes a column of names
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
            warn(f"out of memory on image {image_id}: retrying with batch size {batch_size}")
    errors = np.asarray(result.errors)
    row["evaluations"] = int(result.evaluations)
    if save_errors:
        row.update(errors=errors.astype(np.float32).ravel().tolist(), errors_shape=list(errors.shape),
                   timesteps=list(result.plan.timesteps), repeats=list(result.plan.repeats))
    # no non-finite check here: decide raised NonFiniteError (a failed row, above) at the first NaN or inf
    row.update(status="ok", prediction=int(result.prediction), prediction_name=str(result.prediction_name),
               best_conditioning=int(result.best_conditioning),
               correct=None if label is None else bool(int(result.prediction) == label),
               mean_errors=[float(v) for v in result.mean_errors],
               n_samples=[int(v) for v in result.n_samples])
    return row, batch_size
