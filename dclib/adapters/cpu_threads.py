"""Row-parallel denoiser calls on CPU: each core runs its own slice of the batch on one thread.

A small diffusion model on a few CPU cores spends much of each layer waiting at the intra-op thread barrier:
the layers are too small to split well across cores. Giving every core its own rows instead (one worker
thread per core, one intra-op thread each, a chunk of at most ``CPU_CHUNK_ROWS`` rows per call, which keeps
a chunk's activations in cache; with more cores than ``MIN_CHUNK_ROWS``-row chunks, the workers share the
intra-op threads) made dclib's float32 engine some 15-20% faster on two cores: 1.0-1.35x the evaluations/s
of the official loop (batches of 32, both cores in each call) on the mnist, shapes and tiny SD models, where
one call ran 0.9-1.0x, and 1.6-2.2x under bf16 autocast (``benchmarks/throughput.py --cpu-workers``).
A row's output does not depend on which thread computes it; it can depend, by float rounding, on the chunk's
size (as on any batch size), so results are as reproducible as before: the same call gives the same bits
(``tests/test_cpu_threads.py``).
"""
from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

import torch

#: Rows per worker call: small enough that a chunk's activations stay in cache on the embedded models.
CPU_CHUNK_ROWS = 64
#: Fewest rows per worker: chunks of 8 rows ran slower than one call on both cores, 16 about as fast.
MIN_CHUNK_ROWS = 16

_pools: dict[tuple[int, int], ThreadPoolExecutor] = {}
_pools_lock = threading.Lock()
# a forked child inherits the pools but not their threads: it starts its own
os.register_at_fork(after_in_child=_pools.clear)


def _set_intra_op_threads(threads: int) -> None:
    # torch sets a thread's count from the process default on the thread's first parallel op; take that step
    # first, or it would later undo the setting made here
    torch.get_num_threads()
    torch.set_num_threads(threads)


def _pool(workers: int, threads_each: int) -> ThreadPoolExecutor:
    """A persistent pool of ``workers`` threads with ``threads_each`` intra-op threads each.

    ``torch.set_num_threads`` in a worker also sets the default that threads started later inherit, so the
    pool starts all its threads at once and the caller's setting is put back afterwards.
    """
    with _pools_lock:
        pool = _pools.get((workers, threads_each))
        if pool is None:
            caller_threads = torch.get_num_threads()
            started = threading.Barrier(workers + 1)
            pool = ThreadPoolExecutor(workers, thread_name_prefix="dclib-cpu",
                                      initializer=_set_intra_op_threads, initargs=(threads_each,))
            for _ in range(workers):
                pool.submit(started.wait)
            started.wait()
            torch.set_num_threads(caller_threads)
            _pools[(workers, threads_each)] = pool
        return pool


def plan_workers(rows: int, max_workers: int | None = None, min_rows: int = MIN_CHUNK_ROWS) -> tuple[int, int]:
    """(workers, intra-op threads each) for a call of ``rows`` rows: at most ``max_workers`` workers (None:
    torch's intra-op thread count), none with fewer than ``min_rows`` rows, torch's threads shared among them."""
    threads = torch.get_num_threads()
    workers = max(1, min(threads if max_workers is None else int(max_workers), rows // max(min_rows, 1)))
    return workers, max(1, threads // workers)


def chunk_bounds(rows: int, workers: int, chunk_rows: int = CPU_CHUNK_ROWS) -> list[tuple[int, int]]:
    """Split ``rows`` into a multiple of ``workers`` near-equal chunks of at most ``chunk_rows`` rows."""
    if rows <= 0:
        return []
    per_worker = -(-rows // (workers * chunk_rows))
    chunks = min(rows, workers * per_worker)
    edges = [rows * k // chunks for k in range(chunks + 1)]
    return [(lo, hi) for lo, hi in zip(edges[:-1], edges[1:]) if hi > lo]


def map_rows(fn: Callable[..., torch.Tensor], tensors: tuple[torch.Tensor, ...], max_workers: int | None = None,
             autocast: torch.dtype | None = None, chunk_rows: int = CPU_CHUNK_ROWS,
             min_rows: int = MIN_CHUNK_ROWS) -> torch.Tensor:
    """``fn(*tensors)`` computed chunk by chunk of rows on worker threads (:func:`plan_workers`), concatenated
    in row order; in the calling thread, in one call, when one worker is planned.

    Inference mode and autocast are per-thread states in torch, so each worker enters them itself.
    """
    def run(lo: int, hi: int) -> torch.Tensor:
        with torch.inference_mode(), torch.autocast("cpu", dtype=autocast or torch.bfloat16,
                                                     enabled=autocast is not None):
            return fn(*(v[lo:hi] for v in tensors)).float()

    rows = len(tensors[0])
    workers, threads_each = plan_workers(rows, max_workers, min_rows)
    if workers == 1:
        return run(0, rows)
    pool = _pool(workers, threads_each)
    return torch.cat([f.result() for f in [pool.submit(run, lo, hi)
                                           for lo, hi in chunk_bounds(rows, workers, chunk_rows)]])
