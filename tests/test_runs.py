"""Whole-dataset runs (dclib.runs, `python -m dclib evaluate/report`): resumable after SIGKILL with a
byte-identical results.parquet, identical across process counts, bad input recorded, nothing lost."""
import errno
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from datasets import Dataset
from PIL import Image

from dclib import DiffusionClassifier, runs
from dclib.cli import main
from dclib.errors import InputError

SCHEDULE = "20"  # 10 classes x 20 timesteps = 200 denoiser calls per image
FAST = "5"
N_ROWS = 14  # 12 images + a corrupt and a truncated file
RESULT_KEYS = {"accuracy", "mean_per_class_accuracy", "n", "failed", "evaluations_per_image", "seconds_per_image"}


def cli_env():
    # One thread everywhere: CPU kernels may round differently with another thread count, and the machine is shared.
    return {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """12 grayscale images in class subfolders 0..9, a file that is not an image and a truncated PNG."""
    root = tmp_path_factory.mktemp("folder")
    rng = np.random.RandomState(0)
    for k in range(12):
        d = root / str(k % 10)
        d.mkdir(exist_ok=True)
        Image.fromarray((rng.rand(10, 12) * 255).astype(np.uint8)).save(d / f"img{k:02d}.png")
    (root / "3" / "corrupt.png").write_bytes(b"this is not an image")
    data = (root / "0" / "img00.png").read_bytes()
    (root / "5" / "truncated.png").write_bytes(data[: len(data) // 2])
    return str(root)


@pytest.fixture(scope="module")
def pixel(tiny_models):
    return DiffusionClassifier.from_pretrained(tiny_models["pixel"])


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tiny_models, pixel, folder):
    """An uninterrupted single-process run (Python API) that the other runs must reproduce."""
    out = tmp_path_factory.mktemp("reference") / "run"
    started = time.perf_counter()
    summary = runs.evaluate(tiny_models["pixel"], folder, out, schedule=SCHEDULE, save_errors=True,
                            progress=False, classifier=pixel)
    print(f"\nreference run: {summary['done']} images in {time.perf_counter() - started:.1f} s")
    return out, summary


@pytest.fixture(scope="module")
def fast_reference(tmp_path_factory, tiny_models, pixel, folder):
    out = tmp_path_factory.mktemp("fast") / "run"
    runs.evaluate(tiny_models["pixel"], folder, out, schedule=FAST, save_errors=True, progress=False,
                  classifier=pixel, batch_size=64)
    return runs.load_results(out)


def table_bytes(run_dir) -> bytes:
    return (Path(run_dir) / runs.RESULTS).read_bytes()


def test_run_folder_holds_results_timings_and_config(reference):
    out, summary = reference
    table = pq.read_table(out / runs.RESULTS)
    assert table.schema == runs.results_schema(True)
    assert table["index"].to_pylist() == list(range(N_ROWS))
    assert "seconds" not in table.column_names  # wall-clock time lives in timings.parquet only
    df = table.to_pandas()
    failed = df[df.status == "failed"].set_index("id")
    assert set(failed.index) == {"3/corrupt.png", "5/truncated.png"}
    assert "not an image" in failed.loc["3/corrupt.png", "reason"]
    assert "truncated" in failed.loc["5/truncated.png", "reason"]
    assert failed.prediction.isna().all()
    ok = df[df.status == "ok"]
    assert len(ok) == 12 and ok.reason.isna().all() and (ok.evaluations == 200).all()
    assert (ok.label == ok.id.str.split("/").str[0].astype(int)).all()  # labels from the subfolder names
    for _, row in ok.iterrows():
        errors = runs.error_matrix(row)
        assert errors.shape == (10, 20) and np.isfinite(errors).all()
        np.testing.assert_allclose(row.mean_errors, errors.astype(np.float64).mean(1), rtol=1e-12)
        assert list(row.n_samples) == [20] * 10 and len(row.timesteps) == len(row.repeats) == 20
        assert row.prediction == int(np.argmin(row.mean_errors))
    timings = pq.read_table(out / runs.TIMINGS).to_pandas()
    assert sorted(timings["index"]) == list(range(N_ROWS)) and (timings.seconds > 0).all()
    config = json.loads((out / runs.CONFIG).read_text())
    assert config["model_identity"]["source"] == "local" and len(config["model_identity"]["sha256"]) == 64
    assert {"dclib", "diffusers", "torch"} <= set(config["versions"])
    assert config["schedule"] == "1:20" and config["n_images"] == N_ROWS and config["dataset_kind"] == "imagefolder"
    assert RESULT_KEYS <= set(summary) and summary["n"] == 12 and summary["failed"] == 2 and summary["complete"]
    assert summary["evaluations_per_image"] == 200.0


def test_sigkill_at_random_points_then_resume_is_byte_identical(reference, tiny_models, folder, tmp_path):
    ref_out, _ = reference
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "dclib", "evaluate", "--model", tiny_models["pixel"], "--dataset", folder,
           "--schedule", SCHEDULE, "--save-errors", "--out", str(out), "--flush-rows", "1", "--no-progress",
           "--json"]
    seed = random.randrange(10**6)
    rng = random.Random(seed)

    def n_parts():
        return len(list((out / runs.PARTS).glob("rank*.parquet"))) if (out / runs.PARTS).exists() else 0

    kills, attempts, started = 0, 0, time.perf_counter()
    while kills < 4 and attempts < 8 and n_parts() < N_ROWS:  # flush-rows 1: one part per finished image
        attempts += 1
        log = open(tmp_path / f"attempt{attempts}.log", "w")  # the run's stderr, for a failure's diagnosis
        proc = subprocess.Popen(cmd, env=cli_env(), stdout=log, stderr=log)
        if attempts == 1:  # somewhere in start-up: imports, dataset, model, config.json
            time.sleep(rng.uniform(0.5, 5.0))
        else:  # somewhere in the work: after the next part file appears, plus a random fraction of an image
            before = n_parts()
            deadline = time.monotonic() + 120
            while n_parts() == before and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.02)
            time.sleep(rng.uniform(0.0, 0.3))
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            kills += 1
        proc.wait(timeout=60)
        log.close()
    rows_before_final = n_parts()
    final = subprocess.run(cmd, env=cli_env(), capture_output=True, text=True, timeout=300)
    assert final.returncode == 0, final.stderr[-2000:]
    summary = json.loads(final.stdout.strip().splitlines()[-1])
    parts = [pq.read_table(p, columns=["index"])["index"].to_pylist()
             for p in (out / runs.PARTS).glob("rank*.parquet")]
    part_rows = [i for p in parts for i in p]
    duplicates = len(part_rows) - len(set(part_rows))
    lost = N_ROWS - len(set(part_rows))
    print(f"\nsigkill test (seed {seed}): {kills} kills survived, {rows_before_final} rows finished before the "
          f"final run, {lost} rows lost, {duplicates} duplicates, {time.perf_counter() - started:.1f} s")
    assert kills >= 3
    assert lost == 0 and duplicates == 0 and summary["done"] == N_ROWS and summary["complete"]
    assert table_bytes(out) == table_bytes(ref_out)


def test_two_processes_give_the_same_table(reference, tiny_models, folder, tmp_path):
    ref_out, _ = reference
    out = tmp_path / "two"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "dclib",
           "evaluate", "--model", tiny_models["pixel"], "--dataset", folder, "--schedule", SCHEDULE,
           "--save-errors", "--out", str(out), "--flush-rows", "2", "--device", "cpu", "--no-progress", "--json"]
    started = time.perf_counter()
    proc = subprocess.run(cmd, env=cli_env(), capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else ""
        if any(word in proc.stderr for word in ("Address already in use", "Connection refused", "gloo",
                                                "RendezvousConnectionError", "Operation not permitted")) \
                and not (out / runs.PARTS).exists():
            pytest.skip(f"cannot start 2 processes with torchrun (gloo) in this sandbox: {tail}")
        raise AssertionError(proc.stderr[-3000:])
    print(f"\n2 processes (torchrun, gloo): {time.perf_counter() - started:.1f} s")
    ranks = {p.name.split("-")[0] for p in (out / runs.PARTS).glob("rank*.parquet")}
    assert ranks == {"rank0", "rank1"}  # both processes did work
    assert json.loads(proc.stdout.strip().splitlines()[-1])["done"] == N_ROWS
    assert table_bytes(out) == table_bytes(ref_out)
    timings = pq.read_table(out / runs.TIMINGS).to_pandas()
    assert sorted(timings["rank"].unique()) == [0, 1]


def test_batch_size_changes_no_prediction(fast_reference, tiny_models, pixel, folder, tmp_path):
    runs.evaluate(tiny_models["pixel"], folder, tmp_path / "bs1", schedule=FAST, save_errors=True, progress=False,
                  classifier=pixel, batch_size=1)
    small, big = runs.load_results(tmp_path / "bs1"), fast_reference
    assert small.status.tolist() == big.status.tolist()
    ok = small.status == "ok"
    assert small.prediction[ok].tolist() == big.prediction[ok].tolist()
    for a, b in zip(small.errors[ok], big.errors[ok]):  # float32 kernels may differ in the last bit
        np.testing.assert_allclose(a, b, rtol=1e-5)


class Injected(DiffusionClassifier):
    """The tiny classifier with a denoiser that misbehaves: NaN/inf for some image ids, or out of memory above
    a batch size."""

    def __init__(self, adapter, poison=None, oom_above=None):
        super().__init__(adapter)
        self.poison, self.oom_above = poison or {}, oom_above

    def classify(self, image, image_id=None, **kwargs):
        original = type(self.adapter)._forward.__get__(self.adapter)
        value, limit = self.poison.get(image_id), self.oom_above

        def forward(x_t, t, cond):
            if limit is not None and len(x_t) > limit:
                raise torch.cuda.OutOfMemoryError("CUDA out of memory (injected)")
            out = original(x_t, t, cond)
            return out if value is None else torch.full_like(out, value)

        self.adapter._forward = forward
        try:
            return super().classify(image, image_id=image_id, **kwargs)
        finally:
            del self.adapter._forward


def test_non_finite_errors_are_failed_rows(fast_reference, tiny_models, pixel, folder, tmp_path):
    clf = Injected(pixel.adapter, poison={"1/img01.png": float("nan"), "4/img04.png": float("inf")})
    summary = runs.evaluate(tiny_models["pixel"], folder, tmp_path / "nan", schedule=FAST, save_errors=True,
                            progress=False, classifier=clf)
    df = runs.load_results(tmp_path / "nan").set_index("id")
    for bad in ("1/img01.png", "4/img04.png"):
        assert df.loc[bad, "status"] == "failed" and "non-finite" in df.loc[bad, "reason"]
        assert np.isnan(df.loc[bad, "prediction"])
    assert summary["failed"] == 4 and summary["n"] == 10
    ref = fast_reference.set_index("id")
    ids = df.index[df.status == "ok"]
    assert df.prediction[ids].tolist() == ref.prediction[ids].tolist()


def test_out_of_memory_halves_the_batch_size(fast_reference, tiny_models, pixel, folder, tmp_path, capsys):
    runs.evaluate(tiny_models["pixel"], folder, tmp_path / "oom", schedule=FAST, progress=False,
                  classifier=Injected(pixel.adapter, oom_above=8), batch_size=64)
    df = runs.load_results(tmp_path / "oom")
    timings = pq.read_table(tmp_path / "oom" / runs.TIMINGS).to_pandas()
    ok = df.status == "ok"
    assert ok.sum() == 12 and df.prediction[ok].tolist() == fast_reference.prediction[ok].tolist()
    assert set(timings.batch_size[timings["index"].isin(df["index"][ok])]) == {8}
    assert "retrying with batch size 32" in capsys.readouterr().err
    runs.evaluate(tiny_models["pixel"], folder, tmp_path / "oom1", schedule=FAST, progress=False, limit=1,
                  classifier=Injected(pixel.adapter, oom_above=0), batch_size=4)
    row = runs.load_results(tmp_path / "oom1").iloc[0]
    assert row.status == "failed" and row.reason == "out of memory at batch size 1"


def test_changed_configuration_is_refused_versions_only_warn(tiny_models, pixel, folder, tmp_path, capsys):
    out = tmp_path / "run"
    runs.evaluate(tiny_models["pixel"], folder, out, schedule=FAST, progress=False, classifier=pixel, limit=2)
    code = main(["evaluate", "--model", tiny_models["pixel"], "--dataset", folder, "--schedule", "4", "--seed", "1",
                 "--limit", "2", "--out", str(out), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "different configuration" in err and "seed (0 -> 1)" in err and "schedule" in err and "limit" not in err
    config = json.loads((out / runs.CONFIG).read_text())
    config["versions"]["torch"] = "0.0.1"
    (out / runs.CONFIG).write_text(json.dumps(config))
    before = table_bytes(out)
    stale = out / ".results.parquet.tmp-99999999"  # left by a process killed while merging
    stale.write_bytes(b"partial")
    summary = runs.evaluate(tiny_models["pixel"], folder, out, schedule=FAST, progress=False, classifier=pixel,
                            limit=2)
    assert "versions.torch" in capsys.readouterr().err and summary["done"] == 2
    assert table_bytes(out) == before  # nothing left to do: the finished rows were skipped
    assert not stale.exists()


def test_cli_compile_and_autocast_reach_the_model_and_the_run_config(fast_reference, tiny_models, folder, tmp_path,
                                                                      monkeypatch, capsys):
    import dclib.adapters.loading as loading

    compiled, autocasts = [], []
    real_compile, real_autocast = torch.compile, loading.resolve_autocast
    # dynamo without code generation (inductor takes ~20 s per model here); the mode is what is checked
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: (compiled.append(kw["mode"]),
                                                            real_compile(fn, **{**kw, "backend": "eager"}))[1])
    monkeypatch.setattr(loading, "resolve_autocast", lambda a, *rest: (autocasts.append(a), real_autocast(a, *rest))[1])
    out = tmp_path / "run"
    args = ["evaluate", "--model", tiny_models["pixel"], "--dataset", folder, "--schedule", FAST, "--limit", "3",
            "--out", str(out), "--no-progress"]
    assert main(args + ["--compile-mode", "reduce-overhead", "--autocast", "none"]) == 0
    assert compiled == ["reduce-overhead"] and autocasts == ["none"]  # "none" used to arrive as the default
    config = json.loads((out / runs.CONFIG).read_text())
    assert config["runtime"]["compile"] == "reduce-overhead" and config["autocast"] is None
    df = runs.load_results(out)
    ref = fast_reference[fast_reference["index"].isin(df["index"])]
    assert df.prediction.tolist() == ref.prediction.tolist()
    np.testing.assert_allclose(np.stack(df.mean_errors), np.stack(ref.mean_errors), rtol=1e-5)
    before = table_bytes(out)
    capsys.readouterr()
    assert main(args) == 0  # resumed eager: how it runs may change, with a warning; nothing is recomputed
    assert 'runtime.compile ("reduce-overhead" -> null)' in capsys.readouterr().err
    assert table_bytes(out) == before and compiled == ["reduce-overhead"]


def test_unwritable_output_fails_before_any_work(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(InputError, match="cannot create the output folder"):
        runs.evaluate("no/such-model", "no/such-dataset", blocker / "run")  # neither model nor data is touched
    real_open = open

    def full_disk(path, *args, **kwargs):
        if ".write-probe" in str(path):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(runs.store, "open", full_disk, raising=False)  # the probe is written by runs.store
    with pytest.raises(InputError, match="the disk is full"):
        runs.evaluate("no/such-model", "no/such-dataset", tmp_path / "full")
    monkeypatch.undo()
    if os.geteuid() != 0:  # root may write into a read-only folder
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o555)
        with pytest.raises(InputError, match="cannot"):
            runs.evaluate("no/such-model", "no/such-dataset", ro / "run")


def test_report_merges_parts_when_results_are_missing(reference, tmp_path, capsys):
    ref_out, ref_summary = reference
    out = tmp_path / "copy"
    shutil.copytree(ref_out, out)
    (out / runs.RESULTS).unlink()
    (out / runs.TIMINGS).unlink()
    assert main(["report", str(out), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert RESULT_KEYS <= set(summary) and summary["failed"] == 2 and summary["n"] == 12
    assert summary["accuracy"] == ref_summary["accuracy"] and summary["ci95"] == ref_summary["ci95"]
    assert table_bytes(out) == table_bytes(ref_out)
    assert main(["report", str(out)]) == 0
    text = capsys.readouterr().out
    assert "Clopper-Pearson" in text and "14 of 14 done" in text and "3/corrupt.png" in text
    # A part written twice (e.g. copied back by hand) is deduplicated on merge.
    part = sorted((out / runs.PARTS).glob("rank*.parquet"))[0]
    shutil.copy(part, out / runs.PARTS / "rank9-000000.parquet")
    (out / runs.RESULTS).unlink()
    runs.merge(out)
    assert table_bytes(out) == table_bytes(ref_out)
    assert main(["report", str(tmp_path / "nothing")]) == 2


def test_cli_json_last_line_subset_and_embedded_dataset(tiny_models, folder, tmp_path, capsys):
    subset = tmp_path / "subset.txt"
    subset.write_text("5\n0, 2\n7\n")
    code = main(["evaluate", "--model", tiny_models["pixel"], "--dataset", folder, "--schedule", FAST, "--subset",
                 str(subset), "--limit", "3", "--out", str(tmp_path / "cli"), "--json", "--no-progress"])
    last = capsys.readouterr().out.strip().splitlines()[-1]
    summary = json.loads(last)
    assert code == 0 and RESULT_KEYS <= set(summary)
    assert runs.load_results(tmp_path / "cli")["index"].tolist() == [0, 2, 5]
    assert summary["n"] == 2 and summary["failed"] == 1  # index 5 is the corrupt file
    code = main(["evaluate", "--model", tiny_models["pixel"], "--dataset", "embedded:digits-test", "--subset", "4",
                 "--subset-seed", "3", "--schedule", "2", "--out", str(tmp_path / "emb"), "--json", "--no-progress"])
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    df = runs.load_results(tmp_path / "emb")
    assert code == 0 and summary["n"] == 4 and df["index"].tolist() == runs.select_indices(500, "4", 3)
    assert df["id"].tolist() == [f"digits-test-{i:05d}" for i in df["index"]]  # the dataset's id column


def test_text_model_on_the_zero_shot_benchmark_takes_the_prompts_it_carries(tiny_models, tmp_path, capsys):
    """`evaluate --model TEXT-MODEL --dataset embedded:zeroshot-test` without --prompts: the dataset's prompt CSV."""
    from dclib.data import embedded_prompt_file
    from dclib.prompts import read_prompt_file

    code = main(["evaluate", "--model", tiny_models["sd"], "--dataset", "embedded:zeroshot-test", "--limit", "2",
                 "--schedule", "1", "--out", str(tmp_path / "zs"), "--json", "--no-progress"])
    assert code == 0 and json.loads(capsys.readouterr().out.strip().splitlines()[-1])["n"] == 2
    config = json.loads((tmp_path / "zs" / "config.json").read_text())
    carried = read_prompt_file(embedded_prompt_file("embedded:zeroshot-test"))
    assert config["conditionings"] == list(carried.values) and len(config["class_names"]) == 24
    # A dataset that carries none: one prompt per class name, from the template.
    runs.evaluate(tiny_models["sd"], "embedded:digits-test", tmp_path / "d", limit=1, schedule=1, progress=False)
    config = json.loads((tmp_path / "d" / "config.json").read_text())
    assert config["conditionings"] == [f"a photo of a {i}." for i in range(10)]
    unnamed = Dataset.from_dict({"image": [np.zeros((8, 8), np.uint8)], "label": [0]})  # labels without names
    with pytest.raises(InputError, match="pass prompts"):
        runs.evaluate(tiny_models["sd"], unnamed, tmp_path / "u", limit=1, schedule=1, progress=False)


def test_dataset_selection_and_resolution_errors():
    assert runs.select_indices(10) == list(range(10))
    assert runs.select_indices(10, "3", 1) == runs.select_indices(10, 3, 1) != runs.select_indices(10, 3, 2)
    assert len(runs.select_indices(10, "3", 1)) == 3
    assert runs.select_indices(10, limit=4, limit_mode="first") == [0, 1, 2, 3]
    with pytest.raises(InputError, match="limit mode"):
        runs.select_indices(10, limit=4, limit_mode="last")
    with pytest.raises(InputError, match="rows"):
        runs.select_indices(10, "11")
    with pytest.raises(InputError, match="neither"):
        runs.select_indices(10, "missing-file.txt")
    with pytest.raises(InputError, match="not in the local Hugging Face cache"):
        runs.open_dataset("nobody/no-such-dataset", split="test")
    with pytest.raises(InputError, match="folder not found"):
        runs.open_dataset("./no/such/folder")



def test_limit_takes_a_seeded_stratified_sample_of_a_class_sorted_dataset():
    """A folder stored class by class: --limit 6 used to score the first class only."""
    labels = [0] * 10 + [1] * 10 + [2] * 10
    chosen = runs.select_indices(30, limit=6, labels=labels)
    assert sorted(labels[i] for i in chosen) == [0, 0, 1, 1, 2, 2]
    assert chosen == runs.select_indices(30, limit=6, labels=labels)  # seeded
    assert chosen != runs.select_indices(30, limit=6, labels=labels, subset_seed=1)
    assert set(runs.select_indices(30, limit=7, labels=labels)) > set(chosen)  # prefixes nest
    assert runs.select_indices(30, limit=6, labels=labels, limit_mode="first") == list(range(6))
    # after --subset, the limit samples within the subset
    sub = runs.select_indices(30, "12", 4, limit=3, labels=labels)
    assert len(sub) == 3 and set(sub) <= set(runs.select_indices(30, "12", 4))


def test_labels_match_conditionings_by_name_or_stop_in_one_line():
    from dclib.prompts import Conditionings

    ab = Conditionings.from_prompts(["a", "b"])
    assert runs.label_mapping(["b", "a"], ab) == ("by-name", [1, 0])
    assert runs.label_mapping(["a", "b"], ab) == ("by-name", [0, 1])
    for names, missing in ((["x", "y"], "x, y"), (["a", "b", "c"], "c"), (["a"], "b")):
        with pytest.raises(InputError, match="do not match by name") as err:
            runs.label_mapping(names, ab)
        assert missing in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(InputError, match="carry no class names"):
        runs.label_mapping(None, ab)
    assert runs.label_mapping(["x", "y"], ab, "by-index") == ("by-index", None)
    assert runs.label_mapping(None, ab, "by-index") == ("by-index", None)
    with pytest.raises(InputError, match="3 classes"):
        runs.label_mapping(["x", "y", "z"], ab, "by-index")
    # class-conditional candidates restricted with --labels: the dataset must have exactly those classes
    two_of_four = Conditionings.from_class_indices([1, 3], ["w", "x", "y", "z"])
    assert runs.label_mapping(["z", "x"], two_of_four) == ("by-name", [3, 1])
    with pytest.raises(InputError, match="no dataset class: z"):
        runs.label_mapping(["x"], two_of_four)


def test_evaluate_builds_prompts_from_the_folder_class_names(tiny_models, tmp_path, capsys):
    """A text model on an image folder with no prompt file: --template filled with each subfolder name."""
    from dclib.testing import save_image_folder

    folder = save_image_folder(tmp_path / "images", per_class=1)
    assert main(["evaluate", "--model", tiny_models["sd"], "--dataset", folder, "--schedule", "2",
                 "--template", "a drawing of a {}.", "--out", str(tmp_path / "run"), "--no-progress"]) == 0
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["conditionings"] == ["a drawing of a car.", "a drawing of a cat.", "a drawing of a dog."]
    assert config["class_names"] == ["car", "cat", "dog"] and config["label_mapping"] == "by-name"
    assert main(["evaluate", "--model", tiny_models["sd"], "--dataset", folder, "--schedule", "2",
                 "--template", "no slot", "--out", str(tmp_path / "bad"), "--no-progress"]) != 0
    assert "exactly one '{}'" in capsys.readouterr().err


def test_a_prompt_csv_whose_classes_differ_from_the_folder_stops_before_scoring(tiny_models, tmp_path, capsys):
    """The new user's case: prompts for cat, dog, bird on a folder circle/ square/ triangle scored 50% by position."""
    from dclib.testing import save_image_folder, save_prompt_csv

    folder = save_image_folder(tmp_path / "shapes", ["circle", "square", "triangle"], per_class=1)
    for classes in (["cat", "dog", "bird"], ["circle", "square"]):
        csv = save_prompt_csv(tmp_path / f"{len(classes)}.csv", classes)
        out = tmp_path / f"run{len(classes)}"
        code = main(["evaluate", "--model", tiny_models["sd"], "--dataset", folder, "--prompts", csv,
                     "--schedule", "1", "--out", str(out), "--no-progress"])
        err = capsys.readouterr().err.strip()
        assert code == 2 and err.count("\n") == 0 and "do not match by name" in err, err
        assert not (out / runs.RESULTS).exists()
    # by index, asked for: label i is the CSV's class i, recorded in the config
    csv = save_prompt_csv(tmp_path / "3.csv", ["cat", "dog", "bird"])
    assert main(["evaluate", "--model", tiny_models["sd"], "--dataset", folder, "--prompts", csv, "--schedule", "1",
                 "--label-mapping", "by-index", "--out", str(tmp_path / "idx"), "--no-progress"]) == 0
    assert json.loads((tmp_path / "idx" / runs.CONFIG).read_text())["label_mapping"] == "by-index"


def test_a_run_folder_written_before_names_were_required_still_resumes(tiny_models, tmp_path):
    """Old configs recorded an identity name match as by-index and had no limit_mode (the first rows)."""
    from dclib.testing import save_image_folder

    folder = save_image_folder(tmp_path / "images", per_class=2)
    out = tmp_path / "run"
    runs.evaluate(tiny_models["sd"], folder, out, limit=2, limit_mode="first", schedule=1, progress=False)
    config = json.loads((out / runs.CONFIG).read_text())
    assert config["label_mapping"] == "by-name" and config["limit_mode"] == "first"
    config["label_mapping"] = "by-index"
    del config["limit_mode"]
    (out / runs.CONFIG).write_text(json.dumps(config))
    summary = runs.evaluate(tiny_models["sd"], folder, out, limit=2, limit_mode="first", schedule=1, progress=False)
    assert summary["n"] == 2
    with pytest.raises(InputError, match="limit_mode"):  # the stratified sample is other images: refused
        runs.evaluate(tiny_models["sd"], folder, out, limit=2, schedule=1, progress=False)
