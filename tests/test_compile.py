"""torch.compile path: static-shape padding and agreement with the eager model."""
import pytest
import torch

from dclib import DiffusionClassifier, ScoreOptions, Scorer, even_plan, make_noise
from dclib.scoring import balanced_batch


def test_compiled_denoiser_sees_one_static_batch_shape_and_gives_the_same_errors(tiny_models):
    eager = DiffusionClassifier.from_pretrained(tiny_models["pixel"])
    compiled = DiffusionClassifier.from_pretrained(tiny_models["pixel"])
    shapes = []
    forward = compiled.adapter._forward
    compiled.adapter._forward = lambda x, t, c: (shapes.append(tuple(x.shape)), forward(x, t, c))[1]
    compiled.adapter.compile(backend="eager")  # dynamo tracing without code generation: fast enough for tests
    assert compiled.adapter.compiled
    x0 = torch.randn(eager.adapter.sample_shape)
    plan = even_plan(7)
    noise = make_noise(plan, x0.shape, seed=0, image_id="c")
    conds = eager.adapter.encode_conditions([0, 1, 2])
    t = torch.tensor(plan.timesteps)
    ref = Scorer(eager.adapter, ScoreOptions(), batch_size=8).score(x0, conds, t, noise).errors
    out = Scorer(compiled.adapter, ScoreOptions(), batch_size=8).score(x0, conds, t, noise).errors
    assert len(shapes) == 3 and set(s[0] for s in shapes) == {8}  # 21 pairs -> 8, 8, 5 padded to 8
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
    # 60 pairs at batch 48: two calls of 32 rows (30 padded), not 48 + 12 padded to 48
    shapes.clear()
    plan = even_plan(20)
    noise = make_noise(plan, x0.shape, seed=0, image_id="c")
    t = torch.tensor(plan.timesteps)
    ref = Scorer(eager.adapter, ScoreOptions(), batch_size=48).score(x0, conds, t, noise).errors
    out = Scorer(compiled.adapter, ScoreOptions(), batch_size=48).score(x0, conds, t, noise).errors
    assert [s[0] for s in shapes] == [32, 32]
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)


def test_balanced_batch():
    assert balanced_batch(600, 256) == 200  # 3 calls of 200, no padding
    assert balanced_batch(257, 256) == 136  # 2 calls, 15 padded rows instead of 255
    assert balanced_batch(256, 256) == 256 and balanced_batch(21, 8) == 8 and balanced_batch(5, 256) == 8
    assert balanced_batch(0, 64) == 64
    for total in range(1, 700, 7):
        for cap in (8, 48, 256):
            size = balanced_batch(total, cap)
            assert size <= cap and size % 8 == 0 or size == cap
            assert -(-total // size) == -(-total // cap)  # never more calls than plain batching


def test_compile_mode_is_checked_before_anything_loads():
    from dclib import InputError

    with pytest.raises(InputError, match="unknown compile mode 'fastest': use one of default, reduce-overhead"):
        DiffusionClassifier.from_pretrained("/no/such/folder", compile="fastest")


def test_cuda_graph_replays_get_a_new_step_and_their_outputs_are_copied(tiny_models, monkeypatch):
    """Under CUDA graphs each replay writes into the same output buffer: predict must mark a new step before
    the call and copy the output, or the errors of one batch would be overwritten by the next batch's."""
    clf = DiffusionClassifier.from_pretrained(tiny_models["pixel"])
    adapter = clf.adapter
    forward = adapter._forward
    buffer = {}

    def graph_like(x, t, c):  # a replay: the result lands in one preallocated buffer
        out = forward(x, t, c)
        buffer.setdefault("out", torch.empty_like(out)).copy_(out)
        return buffer["out"]

    adapter._forward = graph_like
    adapter.compile(mode="reduce-overhead", backend="eager")
    assert adapter.compile_mode == "reduce-overhead" and not adapter._cuda_graphs  # CPU: no graphs captured
    adapter._cuda_graphs = True  # as on a GPU
    steps = []
    monkeypatch.setattr(torch.compiler, "cudagraph_mark_step_begin", lambda: steps.append(1))
    x = torch.randn(4, *adapter.sample_shape)
    t = torch.tensor([10, 200, 500, 900])
    cond = adapter.encode_conditions([0, 1, 2, 3])
    first, _ = adapter.predict(x, t, cond)
    expected = forward(x, t, cond).clone()
    second, _ = adapter.predict(x.flip(0), t, cond)
    assert len(steps) == 2
    torch.testing.assert_close(first, expected)  # not overwritten by the second call


def test_unknown_compile_mode_on_the_command_line_is_one_line(tiny_models, capsys):
    from dclib.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["classify", "x.png", "--model", tiny_models["pixel"], "--compile-mode", "fastest"])
    assert exc.value.code == 2 and "invalid choice: 'fastest'" in capsys.readouterr().err
