"""Every benchmark runs end to end at a tiny size and prints the JSON its docstring promises (timings are not
checked here: speed is measured by running the benchmarks, never by tests)."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_benchmark(name, *args):
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / f"{name}.py"), *map(str, args)],
                         capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout)


def test_throughput_reports_both_loops_and_their_agreement():
    report = run_benchmark("throughput", "--models", "digits", "--timesteps", 3, "--repeats", 1, "--batch-size", 8)
    (row,) = report["results"]
    assert row["model"] == "digits" and row["evaluations"] == 30
    assert row["dclib_evals_per_s"] > 0 and row["reference_evals_per_s"] > 0
    assert row["same_predictions"] and row["max_abs_error_diff"] < 1e-4
    assert row["cpu_workers"] >= 1 and row["cpu_threads_per_worker"] >= 1


@pytest.mark.parametrize("task", ["digits", "shapes-shape", "zeroshot"])
def test_pruning_replays_every_method_and_confirms_it_live(task, tmp_path):
    report = run_benchmark("pruning", "--tasks", task, "--n-images", 3, "--live", 1, "--cache", tmp_path)
    methods = {r["method"] for r in report["results"]}
    assert {"Algorithm 1, 5 timesteps", "Algorithm 1, 100 timesteps"} <= methods
    assert any(m.startswith("Algorithm 2") for m in methods) and any(m.startswith("paired pruning") for m in methods)
    assert any("top-3" in m for m in methods)
    for r in report["results"]:
        if "accuracy" in r:
            assert 0 <= r["accuracy"] <= 1 and 0 < r["evaluations_per_image"] <= 100 * 24  # at most 24 classes
    assert report["live_check"] and all(c["same_predictions"] and c["same_evaluations"] for c in report["live_check"])
    assert {t["task"] for t in report["targets"]} == {task}
    assert list(tmp_path.glob("*.npz"))  # the full error matrix was saved for the next run


def test_scaling_reports_time_and_memory_per_class_count():
    report = run_benchmark("scaling", "--classes", "2,4", "--timesteps", 1, "--batch-size", 8)
    assert [r["classes"] for r in report["results"]] == [2, 4]
    for r in report["results"]:
        assert r["evaluations"] == r["classes"] and r["seconds"] > 0
        assert r["peak_rss_mb"] >= r["rss_before_classify_mb"] > 0


def test_exact_savings_reports_each_parts_share_of_a_forward():
    report = run_benchmark("exact_savings", "--batch", 4, "--repeats", 1)
    for row in report["results"].values():
        assert row["batch"] == 4 and row["seconds_per_forward"] > 0
        shares = [row["share: conditioning-independent prefix"], row["share: text K/V projections"]]
        assert all(0 < s < 1 for s in shares) and sum(shares) < 1


def test_time_to_accuracy_reports_both_sides_on_the_same_images():
    report = run_benchmark("time_to_accuracy", "--tasks", "shapes-shape", "--n-images", 2, "--paper-schedule",
                           "2,1:1,2", "--dclib-schedule", "paired:4,strata=2", "--top-k", 2)
    assert {"cpu", "cpu_count", "torch_threads", "torch"} <= set(report["machine"])
    (row,) = report["results"]
    assert row["task"] == "shapes-shape" and row["n"] == 2
    ref, ours = row["reference"], row["dclib"]
    assert ref["batch_size"] == 32 and ours["top_k"] == 2
    assert ref["evaluations_per_image"] == 6 + 2  # 6 prompts on 1 timestep, then the best 2 on 1 more
    assert 0 < ours["evaluations_per_image"] <= 2 * 4  # the top 2 classes' prompts on at most 4 timesteps
    for side in (ref, ours):
        assert side["seconds_per_image"] > 0 and 0 <= side["ci_low"] <= side["accuracy"] <= side["ci_high"] <= 1
    assert row["speedup"] > 0 and 0 <= row["agreement"] <= 1 and 0 <= row["mcnemar"]["p_value"] <= 1
    assert row["not_worse"] == (not (row["mcnemar"]["p_value"] < 0.05 and row["mcnemar"]["effect"] < 0))


def test_class_scaling_measures_every_method_at_every_count_and_confirms_replay_live(tiny_models, tmp_path):
    """The many-class curve on a tiny text-to-image model (bookkeeping only: the nested sets, the reference's cost,
    (e) chosen on dev images, the live check at the largest count, the slope only where the bound holds)."""
    report = run_benchmark("class_scaling", "--model", tiny_models["sd"], "--contrastive", "embedded:shapes-clip",
                           "--classes", "25,50", "--n-images", 4, "--n-live", 2, "--n-dev", 3, "--dev-top-k", "3",
                           "--cache", tmp_path)
    rows = {(r["classes"], r["method"].split(" ")[0]): r for r in report["results"]}
    chosen = report["combination"]["chosen"]
    assert report["combination"]["classes"] == 50 and len(report["combination"]["tried"]) == 4
    for k in (25, 50):
        assert {m for c, m in rows if c == k} == {"(a)", "(b)", "(c)", "(d)", "(e)"}
        assert rows[k, "(a)"]["evaluations_per_image"] == 25 * k and rows[k, "(a)"]["share_of_reference"] == 1
        assert all(r["n_images"] == 4 and 0 <= r["accuracy"] <= 1 for (c, _), r in rows.items() if c == k)
    tree_rows = [r for r in report["results"] if r["method"].startswith("(d)")]
    assert {r["method"] for r in tree_rows} == {"(d) label tree, natural groups", "(d) label tree, text embeddings"}
    assert all(r["tree_seconds"] is not None and r["tree_seconds"] >= 0 for r in tree_rows)
    assert rows[50, "(e)"]["method"] == f"(e) top-{chosen['top_k']} + {chosen['then']}"
    live = [r for r in report["results"] if r["classes"] == 50]
    assert all(r["seconds_per_image"] > 0 for r in live)
    assert all(r["live_equals_replay"] for r in live if not r["method"].startswith("(a)"))
    assert all(r["seconds_per_image"] is None for r in report["results"] if r["classes"] == 25)
    for label, slope in report["log_log_slopes_within_bound"].items():
        assert all(r["difference_ci"][0] >= -0.03 for r in report["results"] if r["method"] == label)
    assert list(tmp_path.rglob("*.npz")) and report["evals_per_second"] > 0  # scored now, kept in the error cache
    assert report["targets"]["classes"] == 50 and report["targets"]["method"] == rows[50, "(e)"]["method"]
    partner = {r["classes"]: r for r in report["partner_alone"]}  # the partner alone at every count, beside (a), (e)
    assert set(partner) == {25, 50} and all(0 <= r["accuracy"] <= 1 and r["n_images"] == 4 for r in partner.values())
    assert all("e_minus_partner" in r for r in partner.values())
    assert report["imagenet_extrapolation"] == {} or report["imagenet_extrapolation"]["classes"] == 1000
