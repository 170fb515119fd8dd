"""Evaluate whole datasets into a run folder: resumable, deterministic, distributed, nothing lost.

A run folder holds::

    config.json        the full configuration, library versions and the model's identity
    parts/             rank{R}-{seq}.parquet: finished rows, appended atomically by each process
    results.parquet    one row per image, sorted by dataset index (rebuilt from the parts; deterministic)
    timings.parquet    wall-clock seconds and the batch size used per image (not deterministic, kept apart)

Killing a run at any moment and rerunning the same command loses no finished image, duplicates none and gives a
byte-identical ``results.parquet``: the noise of every image is keyed by the seed and the image's id
(:mod:`dclib.noise`), so no result depends on the order of images, the number of processes or where a run was
interrupted.

One job per module: :mod:`~dclib.runs.store` (the folder on disk), :mod:`~dclib.runs.sources` (datasets and
images), :mod:`~dclib.runs.provenance` (versions, model identity, config comparison),
:mod:`~dclib.runs.options` (evaluate's option groups), :mod:`~dclib.runs.evaluation` (the evaluate loop) and
:mod:`~dclib.runs.summary` (the report).
"""
from .evaluation import evaluate
from .options import LoadOptions, RunOptions, Selection
from .provenance import compare_configs, hash_model_folder, model_identity, versions
from .sources import (DatasetSource, hub_offline, label_mapping, open_dataset, open_image, select_indices,
                      stratified_order)
from .store import (CONFIG, FORMAT, PARTS, RESULTS, TIMINGS, PartWriter, check_writable, error_matrix, load_results,
                    merge, read_config, read_store, results_schema, write_parquet_atomic)
from .summary import format_summary, report, summarize_run

__all__ = ["evaluate", "LoadOptions", "RunOptions", "Selection", "compare_configs", "hash_model_folder",
           "model_identity", "versions", "DatasetSource",
           "hub_offline", "label_mapping", "open_dataset", "open_image", "select_indices", "stratified_order", "CONFIG",
           "FORMAT", "PARTS",
           "RESULTS", "TIMINGS", "PartWriter", "check_writable", "error_matrix", "load_results", "merge",
           "read_config", "read_store", "results_schema", "write_parquet_atomic", "format_summary", "report",
           "summarize_run"]
