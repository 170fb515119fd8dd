"""A run folder's report: accuracy with its 95% Clopper-Pearson interval, per class, failures, evaluations and
seconds per image (``python -m dclib report``)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..stats import clopper_pearson, summarize
from .store import merge, read_config

def summarize_run(run_dir: str | Path, write: bool = True) -> dict:
    """Accuracy (95% Clopper-Pearson), mean per-class accuracy, failures, evaluations and seconds per image of a
    run folder; merges the parts first (writing ``results.parquet`` when it is missing or stale)."""
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
