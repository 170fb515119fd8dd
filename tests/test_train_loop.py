"""The one training loop of dclib.train (history, checkpoints, EMA, hooks) on a toy model, and the noising the
recipes take from their diffusers scheduler."""
import pytest
import torch

from dclib.train import pixel
from dclib.train.common import EMA
from dclib.train.loop import StepLoss, train_loop
from dclib.train.shapes import ShapesRecipe, build_scheduler


def _toy(steps, **kw):
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(16, 3), torch.randn(16, 1)

    def step_loss(step):
        loss = torch.nn.functional.mse_loss(model(x), y)
        return StepLoss(loss, float(step))  # logged = the step number, to check the train_loss window

    return model, train_loop(model, opt, step_loss, steps, lr=0.1, warmup=1, grad_clip=1.0, **kw)


def test_history_rows_checkpoints_and_hooks():
    seen, saved, order = [], [], []
    model = torch.nn.Linear(3, 1)
    ema = EMA(model, 0.9)

    def evaluate(weights, step):
        seen.append((weights, step))
        return {"val": float(step)}

    torch.manual_seed(0)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x = torch.randn(4, 3)

    def step_loss(step):
        order.append("step")
        return StepLoss(model(x).pow(2).mean(), float(step))

    log = train_loop(model, opt, step_loss, 5, lr=0.1, warmup=1, grad_clip=1.0, ema=ema,
                     after_step=lambda: order.append("after"), evaluate=evaluate, eval_every=2,
                     checkpoints=(2, 5), save_checkpoint=saved.append, progress=False)
    # evaluations every 2 steps and at the last one, on the EMA weights; train_loss is the mean over the window
    assert [r["step"] for r in log.history] == [2, 4, 5]
    assert [r["train_loss"] for r in log.history] == [0.5, 2.5, 3.5]
    assert list(log.history[0]) == ["step", "train_loss", "val"]
    assert all(w is ema.model for w, _ in seen)
    assert saved == [2]  # the last step is the recipe's to save
    assert order == ["step", "after"] * 5 and log.losses == [0.0, 1.0, 2.0, 3.0, 4.0]


def test_train_loss_window_and_no_evaluation():
    _, log = _toy(4, evaluate=lambda w, s: {}, eval_every=2, train_loss_window=1)
    assert [r["train_loss"] for r in log.history] == [1.0, 3.0]
    _, log = _toy(3)
    assert log.history == [] and log.losses == [0.0, 1.0, 2.0]
    _, log = _toy(0, evaluate=lambda w, s: {}, eval_every=2)
    assert log == ([], [], 0, 0.0)


def test_scheduler_add_noise_is_the_forward_formula_bitwise():
    """The recipes noise with their scheduler's add_noise; it is sqrt(abar) x0 + sqrt(1 - abar) eps exactly."""
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(64, 4, 8, 8, generator=g), torch.randn(64, 4, 8, 8, generator=g)
    t = torch.randint(0, 1000, (64,), generator=g)
    for scheduler, abar in ((build_scheduler(ShapesRecipe()), None),
                            (pixel.build_scheduler(), torch.cumprod(1 - pixel.BETAS, 0))):
        abar = scheduler.alphas_cumprod if abar is None else abar
        a = abar[t].view(-1, 1, 1, 1)
        assert torch.equal(scheduler.add_noise(x0, eps, t), a.sqrt() * x0 + (1 - a).sqrt() * eps)


def test_a_run_saved_by_other_code_goes_on_with_a_warning_and_one_of_another_recipe_is_refused(tmp_path, monkeypatch):
    from dclib.train.loop import ResumeFile

    model = torch.nn.Linear(2, 1)
    opt = torch.optim.AdamW(model.parameters())
    state = {"n": 0}
    resume = ResumeFile(tmp_path / "resume" / "r.pt", 1, lambda: dict(state), state.update, key="recipe A")
    resume.save(3, model, opt, None, [{"step": 2}], [0.5], seconds=12.5)
    assert resume.load(model, opt, None) == (3, [{"step": 2}], [0.5], 12.5)  # same code: silent
    monkeypatch.setattr(ResumeFile, "made_with", staticmethod(lambda: {"dclib": "other", "torch": "x", "threads": 9}))
    with pytest.warns(UserWarning, match="may differ from an unstopped run"):
        resume.load(model, opt, None)
    with pytest.raises(ValueError, match="another recipe or step count"):
        ResumeFile(tmp_path / "resume" / "r.pt", 1, dict, state.update, key="recipe B").load(model, opt, None)
    resume.done()  # the file and its emptied folder go
    assert not (tmp_path / "resume").exists() and resume.load(model, opt, None) == (0, [], [], 0.0)
    resume.save(3, model, opt, None, [], [])  # a run that did not record its seconds: unknown, not zero
    assert resume.load(model, opt, None)[3] is None
    with pytest.raises(ValueError, match="every N >= 1"):
        ResumeFile(tmp_path / "r.pt", 0, dict, state.update)
