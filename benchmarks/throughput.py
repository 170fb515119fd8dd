#!/usr/bin/env python
"""Denoiser evaluations per second: dclib's scoring engine vs a reference loop written the way the official
evaluation (eval_prob_adaptive.py) does it, on the same model, image, conditionings and plan, in one run.

    python benchmarks/throughput.py [--models digits,mnist,shapes,tiny-sd] [--gpu-models sd2-unet,dit-xl-2]
                                    [--autocast bfloat16] [--compile] [--compile-mode reduce-overhead]
                                    [--cpu-workers N]

Prints one JSON object: {"device": ..., "results": [{"model", "dtype", "dclib_evals_per_s",
"reference_evals_per_s", "ratio", "max_abs_error_diff", "same_predictions", ...}, ...]}.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from dclib import DiffusionClassifier, ScoreOptions, Scorer, even_plan, make_noise  # noqa: E402
from dclib.adapters.base import COMPILE_MODES, DiffusionAdapter  # noqa: E402
from dclib.adapters.cpu_threads import plan_workers  # noqa: E402
from dclib.scoring import auto_batch_size  # noqa: E402


def reference_errors(adapter, x0, cond, timesteps, noise, batch_size=32, forward=None):
    """The official loop: per prompt and timestep, tuples in Python lists, batches of 32, one call each
    (through ``forward``, the eager denoiser call, when dclib's is compiled)."""
    forward = forward or adapter._forward
    ts, noise_idxs, cond_idxs = [], [], []
    for c in range(len(cond)):
        for s, t in enumerate(timesteps.tolist()):
            ts.append(t), noise_idxs.append(s), cond_idxs.append(c)
    abar = adapter.alphas_cumprod.to(adapter.device)
    if adapter.dtype == torch.float16:
        abar = abar.half()
    x0 = x0.to(adapter.device, adapter.dtype)
    noise = noise.to(adapter.device, adapter.dtype)
    errors = torch.zeros(len(ts))
    with torch.inference_mode():
        for i in range(0, len(ts), batch_size):
            bt = torch.tensor(ts[i:i + batch_size])
            eps = noise[noise_idxs[i:i + batch_size]]
            a = abar[bt.to(adapter.device)].view(-1, 1, 1, 1)
            xt = x0 * a ** 0.5 + eps * (1 - a) ** 0.5
            pred = forward(xt, bt.to(adapter.device), cond[cond_idxs[i:i + batch_size]])
            pred = adapter.to_eps(pred[:, : x0.shape[0]].float(), xt.float(), bt.to(adapter.device))
            errors[i:i + len(bt)] = F.mse_loss(eps.float(), pred, reduction="none").mean((1, 2, 3)).cpu()
    return errors.view(len(cond), len(timesteps))


def timed_pair(reference_fn, dclib_fn, repeats, sync):
    """Median seconds per run of each, the two runs interleaved so that drift in the machine's speed (other
    tenants, clocks) falls on both alike."""
    times = {reference_fn: [], dclib_fn: []}
    out = {}
    for fn in (reference_fn, dclib_fn):
        fn()  # warm-up (allocations, cuDNN autotuning)
    for _ in range(repeats):
        for fn in (reference_fn, dclib_fn):
            sync()
            start = time.perf_counter()
            out[fn] = fn()
            sync()
            times[fn].append(time.perf_counter() - start)
    median = lambda v: sorted(v)[len(v) // 2]
    return out[reference_fn], median(times[reference_fn]), out[dclib_fn], median(times[dclib_fn])


def bench(name, adapter, x0, cond, n_timesteps, batch_size, repeats, flops_per_eval=None, peak=None,
          compile=False):
    plan = even_plan(n_timesteps, adapter.num_train_timesteps)
    t = torch.tensor(plan.timesteps)
    noise = make_noise(plan, x0.shape, seed=0, image_id="bench")
    sync = torch.cuda.synchronize if adapter.device.type == "cuda" else (lambda: None)
    eager = adapter._forward  # the reference always runs eager (the official code does not compile)
    compile_s = None
    if compile:
        adapter.compile(compile)
        started = time.perf_counter()
        Scorer(adapter, ScoreOptions(), batch_size=batch_size).score(x0, cond, t, noise)  # compiles
        sync()
        compile_s = round(time.perf_counter() - started, 1)
    scorer = Scorer(adapter, ScoreOptions(), batch_size=batch_size)
    ref, ref_s, ours, ours_s = timed_pair(lambda: reference_errors(adapter, x0, cond, t, noise, forward=eager),
                                          lambda: scorer.score(x0, cond, t, noise).errors, repeats, sync)
    n_evals = len(cond) * len(t)
    row = {"model": name, "dtype": str(adapter.dtype).replace("torch.", ""),
           "autocast": str(adapter.autocast).replace("torch.", "") if adapter.autocast else None,
           "evaluations": n_evals, "dclib_batch_size": batch_size, "reference_batch_size": 32,
           "dclib_evals_per_s": round(n_evals / ours_s, 1), "reference_evals_per_s": round(n_evals / ref_s, 1),
           "ratio": round(ref_s / ours_s, 3), "max_abs_error_diff": float((ours - ref).abs().max()),
           "same_predictions": bool(torch.equal(ours.mean(1).argmin(), ref.mean(1).argmin())),
           "compiled": adapter.compile_mode, "compile_seconds": compile_s}
    if adapter.device.type == "cpu" and not compile:  # dclib's row-parallel workers (dclib.adapters.cpu_threads)
        row["cpu_workers"], row["cpu_threads_per_worker"] = plan_workers(min(batch_size, n_evals), adapter.cpu_workers)
    if flops_per_eval:
        row["dclib_tflops"] = round(flops_per_eval * n_evals / ours_s / 1e12, 2)
        row["reference_tflops"] = round(flops_per_eval * n_evals / ref_s / 1e12, 2)
        row["bf16_matmul_peak_tflops"] = peak
    return row


class UNetOnly(DiffusionAdapter):
    """A bare denoiser behind the adapter interface (random weights: timing only)."""

    def __init__(self, model, scheduler, device, dtype, call, shape, learned_variance=False):
        super().__init__(scheduler, device, dtype)
        self.model, self.call, self._shape = model.to(device, dtype).eval(), call, shape
        self.learned_variance = learned_variance

    @property
    def sample_shape(self):
        return self._shape

    def _forward(self, x_t, t, cond):
        return self.call(self.model, x_t, t, cond)


def flops_of(adapter, x0, cond):
    from torch.utils.flop_counter import FlopCounterMode

    x = x0[None].to(adapter.device, adapter.dtype)
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        adapter._forward(x, torch.tensor([500], device=adapter.device), cond[:1])
    return counter.get_total_flops()


def matmul_peak(device, dtype=torch.bfloat16, n=8192, repeats=20):
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    torch.cuda.synchronize()
    return round(2 * n ** 3 * repeats / (time.perf_counter() - start) / 1e12, 1)


def gpu_models(names, device, dtype):
    from diffusers import DDPMScheduler, DiTTransformer2DModel, UNet2DConditionModel

    out = {}
    if "sd2-unet" in names:
        # stabilityai/stable-diffusion-2-base's UNet config (865.9M parameters), random weights
        unet = UNet2DConditionModel(sample_size=64, cross_attention_dim=1024, attention_head_dim=(5, 10, 20, 20),
                                    use_linear_projection=True, block_out_channels=(320, 640, 1280, 1280))
        sched = DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
        a = UNetOnly(unet, sched, device, dtype, lambda m, x, t, c: m(x, t, encoder_hidden_states=c).sample,
                     (4, 64, 64))
        out["sd2-unet (64x64 latents)"] = (a, torch.randn(4, 64, 64),
                                           torch.randn(10, 77, 1024, device=device, dtype=dtype))
    if "dit-xl-2" in names:
        for side in (32, 64):
            dit = DiTTransformer2DModel(num_attention_heads=16, attention_head_dim=72, in_channels=4, out_channels=8,
                                        num_layers=28, sample_size=side, patch_size=2, num_embeds_ada_norm=1000)
            sched = DDPMScheduler(beta_schedule="linear", beta_start=1e-4, beta_end=0.02)
            a = UNetOnly(dit, sched, device, dtype,
                         lambda m, x, t, c: m(x, timestep=t, class_labels=c).sample, (4, side, side), True)
            out[f"DiT-XL/2 ({side}x{side} latents)"] = (a, torch.randn(4, side, side),
                                                        torch.arange(10, device=device))
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="digits,mnist,shapes,tiny-sd")
    parser.add_argument("--gpu-models", default="sd2-unet,dit-xl-2")
    parser.add_argument("--timesteps", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=None,
                        help="dclib batch size (default: dclib's own, batch_size=\"auto\")")
    parser.add_argument("--repeats", type=int, default=7, help="timed runs of each (median reported)")
    parser.add_argument("--autocast", default=None, choices=[None, "bfloat16"], help="CPU autocast for dclib")
    parser.add_argument("--cpu-workers", type=int, default=None,
                        help="most row-parallel CPU workers per denoiser call (default: one per thread; 1: off)")
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile dclib's denoiser (compilation time reported apart, not in evals/s)")
    parser.add_argument("--compile-mode", default=None, choices=COMPILE_MODES,
                        help="torch.compile mode, implies --compile (reduce-overhead: CUDA graphs on a GPU)")
    args = parser.parse_args()
    compile_mode = args.compile_mode or args.compile  # --compile-mode implies --compile
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    dtype = torch.float16 if cuda else torch.float32
    results = []
    image = (torch.rand(40, 40, 3) * 255).byte().numpy()
    for name in [m for m in args.models.split(",") if m]:
        if name == "tiny-sd":
            import tempfile

            from dclib.testing import tiny_sd_pipeline

            folder = tempfile.mkdtemp()
            tiny_sd_pipeline().save_pretrained(folder)
            clf = DiffusionClassifier.from_pretrained(folder, torch_dtype=dtype, device=device)
            cond = clf.adapter.encode_conditions([f"a photo of a {w}" for w in ["dog", "cat", "car", "bird", "circle"]])
        elif name == "shapes":  # the text-to-image embedded model, prompted with the zero-shot shape prompts
            from dclib.data import zero_shot_prompts

            clf = DiffusionClassifier.from_pretrained("embedded:shapes", torch_dtype=dtype, device=device)
            cond = clf.adapter.encode_conditions([row[0] for row in zero_shot_prompts("shape")])
        else:
            clf = DiffusionClassifier.from_pretrained(f"embedded:{name}", torch_dtype=dtype, device=device)
            cond = clf.adapter.encode_conditions(list(range(len(clf.adapter.class_names))))
        clf.adapter.autocast = torch.bfloat16 if args.autocast == "bfloat16" else None
        clf.adapter.cpu_workers = args.cpu_workers
        x0, _ = clf.encode_image(image)
        batch_size = args.batch_size or auto_batch_size(clf.adapter)
        results.append(bench(name, clf.adapter, x0, cond, args.timesteps, batch_size, args.repeats,
                             compile=compile_mode))
    if cuda:
        peak = matmul_peak(device)
        for name, (adapter, x0, cond) in gpu_models(args.gpu_models.split(","), device, dtype).items():
            # bare denoisers without a conditioning encoder: a fixed batch rather than the memory probe
            results.append(bench(name, adapter, x0, cond, args.timesteps, args.batch_size or 250, args.repeats,
                                 flops_of(adapter, x0, cond), peak, compile=compile_mode))
    print(json.dumps({"device": torch.cuda.get_device_name() if cuda else f"CPU ({platform.machine()}, "
                      f"{torch.get_num_threads()} threads)", "torch": torch.__version__, "results": results}))


if __name__ == "__main__":
    main()
