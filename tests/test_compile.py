"""torch.compile path: static-shape padding and agreement with the eager model."""
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
