"""Row-parallel denoiser calls on CPU: each core runs its own slice of the batch on one thread.

A small diffusion model on a few CPU cores spends much of each layer waiting at the intra-op thread barrier:
the layers are too small to split well across cores. Giving every core its own rows instead (one worker
thread per core, one intra-op thread each, a chunk of at most ``CPU_CHUNK_ROWS`` rows per call, which keeps
a chunk's activations in cache) ran the embedded models 1.4-2x faster than the official loop's batches of 32
on two cores (``benchmarks/throughput.py``). A row's output does not depend on which thread computes it; it
can depend, by float rounding, on the chunk's size (as on any batch size), so results are as reproducible as
before: the same call gives the same bits (``tests/test_cpu_threads.py``).
"""
from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

import torch

#: Rows per worker call: small enough that a chunk's activations stay in cache on the embedded models.
CPU_CHUNK_ROWS = 64

_pools: dict[int, ThreadPoolExecutor] = {}
_pools_lock = threading.Lock()


def _one_intra_op_thread() -> None:
    # torch sets a thread's count from the process default on the thread's first parallel op; take that step
    # first, or it would later undo the setting made here
    torch.get_num_threads()
    torch.set_num_threads(1)


def _pool(workers: int) -> ThreadPoolExecutor:
    """A persistent pool of ``workers`` threads, each with one intra-op thread.

    ``torch.set_num_threads`` in a worker also sets the default that threads started later inherit, so the
    pool starts all its threads at once and the caller's setting is put back afterwards.
    """
    with _pools_lock:
        pool = _pools.get(workers)
        if pool is None:
            caller_threads = torch.get_num_threads()
            started = threading.Barrier(workers + 1)
            pool = ThreadPoolExecutor(workers, thread_name_prefix="dclib-cpu",
                                      initializer=_one_intra_op_thread)
            for _ in range(workers):
                pool.submit(started.wait)
            started.wait()
            torch.set_num_threads(caller_threads)
            _pools[workers] = pool
        return pool


def chunk_bounds(rows: int, workers: int, chunk_rows: int = CPU_CHUNK_ROWS) -> list[tuple[int, int]]:
    """Split ``rows`` into a multiple of ``workers`` near-equal chunks of at most ``chunk_rows`` rows."""
    if rows <= 0:
        return []
    per_worker = -(-rows // (workers * chunk_rows))
    chunks = min(rows, workers * per_worker)
    edges = [rows * k // chunks for k in range(chunks + 1)]
    return [(lo, hi) for lo, hi in zip(edges[:-1], edges[1:]) if hi > lo]


def cpu_workers(requested: int | None) -> int:
    """Worker threads to use: ``requested``, or (None) as many as torch's intra-op threads."""
    return max(1, int(requested) if requested is not None else torch.get_num_threads())


def map_rows(fn: Callable[..., torch.Tensor], tensors: tuple[torch.Tensor, ...], workers: int,
             autocast: torch.dtype | None = None, chunk_rows: int = CPU_CHUNK_ROWS) -> torch.Tensor:
    """``fn(*tensors)`` computed chunk by chunk of rows on ``workers`` threads, concatenated in row order.

    Inference mode and autocast are per-thread states in torch, so each worker enters them itself.
    """
    def run(lo: int, hi: int) -> torch.Tensor:
        with torch.inference_mode(), torch.autocast("cpu", dtype=autocast or torch.bfloat16,
                                                     enabled=autocast is not None):
            return fn(*(v[lo:hi] for v in tensors)).float()

    bounds = chunk_bounds(len(tensors[0]), workers, chunk_rows)
    if workers == 1 or len(bounds) <= 1:
        return run(0, len(tensors[0]))
    pool = _pool(workers)
    return torch.cat([f.result() for f in [pool.submit(run, lo, hi) for lo, hi in bounds]])
