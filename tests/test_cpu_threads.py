"""Row-parallel CPU denoiser calls: the outputs of one call (to float rounding: kernels may block a chunk of
37 rows differently from one of 150), the caller's thread setting untouched."""
import threading

import pytest
import torch

from dclib import ScoreOptions, Scorer, even_plan, make_noise
from dclib.adapters.cpu_threads import MIN_CHUNK_ROWS, chunk_bounds, map_rows, plan_workers


@pytest.mark.parametrize("rows,workers,chunk", [(256, 2, 64), (200, 2, 64), (7, 2, 64), (1, 4, 64), (130, 3, 16),
                                                (0, 2, 64)])
def test_chunks_cover_the_rows_in_order_in_a_multiple_of_the_workers(rows, workers, chunk):
    bounds = chunk_bounds(rows, workers, chunk)
    assert [lo for lo, _ in bounds] == ([0] + [hi for _, hi in bounds[:-1]] if bounds else [])
    assert (bounds[-1][1] if bounds else 0) == rows
    assert all(0 < hi - lo <= chunk for lo, hi in bounds)
    if rows >= workers:
        assert len(bounds) % workers == 0
        sizes = [hi - lo for lo, hi in bounds]
        assert max(sizes) - min(sizes) <= 1
    assert chunk_bounds(256, 2, 64) == [(0, 64), (64, 128), (128, 192), (192, 256)]


def test_worker_plan_keeps_chunks_large_and_shares_the_threads(monkeypatch):
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    assert plan_workers(256) == (2, 1) and plan_workers(2 * MIN_CHUNK_ROWS) == (2, 1)
    assert plan_workers(2 * MIN_CHUNK_ROWS - 1) == (1, 2)  # too few rows for two workers: one call, two threads
    assert plan_workers(256, max_workers=1) == (1, 2) and plan_workers(0) == (1, 2)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 64)
    assert plan_workers(256) == (16, 4)  # 16 rows each, 4 intra-op threads each
    assert plan_workers(4096) == (64, 1)


@pytest.mark.parametrize("family", ["pixel", "sd"])
@pytest.mark.parametrize("autocast", [None, torch.bfloat16])
def test_row_parallel_predictions_equal_one_call(classifiers, family, autocast):
    adapter = classifiers[family].adapter
    conds = adapter.encode_conditions(["a dog", "a cat", ""] if adapter.text_conditioned else [0, 1, 2])
    g = torch.Generator().manual_seed(0)
    n = 150
    x = torch.randn(n, *adapter.sample_shape, generator=g)
    t = torch.randint(0, adapter.num_train_timesteps, (n,), generator=g)
    cond = conds[torch.arange(n) % len(conds)]
    saved = adapter.autocast, adapter.cpu_workers
    try:
        adapter.autocast = autocast
        adapter.cpu_workers = 1
        one_call = adapter.predict(x, t, cond)[0]
        adapter.cpu_workers = 2
        calls = []
        forward = adapter._forward
        adapter._forward = lambda *a: (calls.append((threading.current_thread().name, len(a[0]))), forward(*a))[1]
        try:
            parallel = adapter.predict(x, t, cond)[0]
        finally:
            del adapter._forward
    finally:
        adapter.autocast, adapter.cpu_workers = saved
    assert sorted(size for _, size in calls) == [37, 37, 38, 38]  # 150 rows: 4 chunks of at most 64
    assert all(name.startswith("dclib-cpu") for name, _ in calls)
    torch.testing.assert_close(parallel, one_call, rtol=1e-5, atol=1e-6)


def test_scores_do_not_depend_on_the_worker_count(classifiers):
    adapter = classifiers["pixel"].adapter
    x0 = torch.randn(adapter.sample_shape)
    plan = even_plan(30)
    noise = make_noise(plan, x0.shape, seed=0, image_id="w")
    conds = adapter.encode_conditions([0, 1, 2])
    t = torch.tensor(plan.timesteps)
    results = []
    for workers in (1, 2, 3):
        adapter.cpu_workers = workers
        results.append(Scorer(adapter, ScoreOptions(), batch_size=64).score(x0, conds, t, noise).errors)
    for r in results[1:]:
        torch.testing.assert_close(r, results[0], rtol=1e-5, atol=1e-6)
    again = Scorer(adapter, ScoreOptions(), batch_size=64).score(x0, conds, t, noise).errors  # 3 workers again
    adapter.cpu_workers = None
    assert torch.equal(again, results[2])


def test_worker_threads_leave_the_callers_thread_count_alone():
    before = torch.get_num_threads()
    out = map_rows(lambda v: v * 2 + torch.get_num_threads(), (torch.zeros(10, 1),), max_workers=2, chunk_rows=4,
                   min_rows=1)
    assert out.flatten().tolist() == [1.0] * 10  # every chunk ran on a worker with one intra-op thread
    seen = []
    fresh = threading.Thread(target=lambda: seen.append(torch.get_num_threads()))
    fresh.start(), fresh.join()
    assert torch.get_num_threads() == before and seen == [before]


def test_a_worker_error_reaches_the_caller():
    def fail(v):
        raise ValueError("bad rows")

    with pytest.raises(ValueError, match="bad rows"):
        map_rows(fail, (torch.zeros(8, 1),), max_workers=2, chunk_rows=2, min_rows=1)


def test_a_forked_child_gets_its_own_workers():
    import multiprocessing

    map_rows(lambda v: v + 1, (torch.zeros(8, 1),), max_workers=2, chunk_rows=2, min_rows=1)  # the parent's pool
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(1) as pool:
        assert pool.apply_async(_sum_in_workers, (8,)).get(timeout=60) == 8.0  # a hang would time out


def _sum_in_workers(rows):
    return float(map_rows(lambda v: v + 1, (torch.zeros(rows, 1),), max_workers=2, chunk_rows=2, min_rows=1)
                 .sum())
