"""The run folder on disk: parquet parts appended atomically, merged into one deterministic results table.

Every process appends the rows it finishes to small part files, written to a temporary name, fsynced and
renamed into place, so a part is either whole or absent; merging deduplicates by dataset index (an ``ok`` row
wins over a ``failed`` one) and sorts by it, so ``results.parquet`` does not depend on how the work was split or
interrupted. Also here: the writability probe, stale temporaries and the one-writer-per-rank lock.
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import DclibError, InputError

CONFIG = "config.json"

RESULTS = "results.parquet"

TIMINGS = "timings.parquet"

PARTS = "parts"

FORMAT = "dclib-run/1"

#: config.json keys that may differ between runs into the same folder (a warning, not a refusal).
RUNTIME_KEYS = ("versions", "runtime")

MIN_FREE_BYTES = 16 * 2**20


def warn(message: str) -> None:
    """A one-line warning on stderr, prefixed so it is known to come from dclib."""
    print(f"dclib: warning: {message}", file=sys.stderr, flush=True)


def results_schema(save_errors: bool):
    """The fixed column layout of ``results.parquet`` (the error columns only with ``save_errors``)."""
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
    schema = results_schema(save_errors)
    for f in (pa.field("seconds", pa.float64()), pa.field("batch_size", pa.int32()), pa.field("rank", pa.int32())):
        schema = schema.append(f)
    return schema


def _timings_schema():
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


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path``, then rename it over ``path``: a reader never sees half."""
    tmp = path.parent / f".{path.name}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _part_files(run_dir: Path) -> list[Path]:
    folder = run_dir / PARTS
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.glob("rank*-*.parquet") if not p.name.startswith("."))


def _read_parquet(path: Path, columns=None):
    try:
        return pq.read_table(path, columns=columns)
    except Exception as err:  # a part copied by hand and cut short, a disk error ...
        warn(f"ignoring unreadable result file {path}: {str(err).splitlines()[0] if str(err) else err}")
        return None


def _dedupe(table):
    """One row per dataset index: an ``ok`` row wins over a ``failed`` one, then the earliest source."""
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


def read_config(run_dir: str | Path) -> dict:
    path = Path(run_dir) / CONFIG
    if not path.exists():
        raise InputError(f"{run_dir} is not a dclib run folder (no {CONFIG})")
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise InputError(f"cannot read {path}: {err}") from None


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
def rank_lock(run_dir: Path, rank: int):
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
