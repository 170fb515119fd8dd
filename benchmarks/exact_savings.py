#!/usr/bin/env python
"""How much of a denoiser call two exact savings could remove (issue: "exact savings left on the table").

1. The part of the UNet that never sees the conditioning, computed once per (t, eps) instead of once per
   (conditioning, t, eps): in diffusers' UNet2DConditionModel that is the time embedding, ``conv_in`` and the
   layers of the first down block before its first cross-attention (the first ResNet); every later layer mixes
   in the text through cross-attention (or, in a class-conditional DiT, adaLN on every block).
2. The text key/value projections (``attn2.to_k`` / ``to_v`` of every cross-attention) computed once per prompt
   instead of once per (prompt, t, eps) row.

Each is timed inside real forward passes with forward hooks (CPU: synchronous, so wall time per module is its
cost), at the batch size dclib uses, on the embedded zero-shot model and the tiny SD pipeline's UNet shape.
Prints one JSON object: per model, the forward's seconds and each part's share of it. A share is the most a
saving could gain (it would still run once per (t, eps) or per prompt).

    python benchmarks/exact_savings.py [--batch 256] [--repeats 5]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from collections import defaultdict

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from dclib import DiffusionClassifier  # noqa: E402
from dclib.adapters.loading import quiet_hf_logging  # noqa: E402
from dclib.testing import tiny_sd_pipeline  # noqa: E402


def timed_parts(unet) -> tuple[dict, list]:
    """Forward hooks adding each part's wall time to ``totals``: cond-independent prefix, text K/V projections."""
    totals, handles = defaultdict(float), []

    def track(module, name):
        def pre(_m, _i):
            module._dclib_t0 = time.perf_counter()

        def post(_m, _i, _o):
            totals[name] += time.perf_counter() - module._dclib_t0
        handles.extend([module.register_forward_pre_hook(pre), module.register_forward_hook(post)])

    for module in (unet.time_proj, unet.time_embedding, unet.conv_in, unet.down_blocks[0].resnets[0]):
        track(module, "conditioning-independent prefix")
    for name, module in unet.named_modules():
        if name.endswith("attn2.to_k") or name.endswith("attn2.to_v"):
            track(module, "text K/V projections")
    return totals, handles


def measure(clf, batch: int, repeats: int, prompts: list[str]) -> dict:
    adapter = clf.adapter
    unet = adapter.unet
    cond = adapter.encode_conditions(prompts)
    x0 = torch.randn(1, *adapter.sample_shape)
    shape = (batch, *adapter.sample_shape)
    xt = x0.expand(shape).clone() + torch.randn(shape)
    t = torch.randint(0, adapter.num_train_timesteps, (batch,))
    text = cond[torch.arange(batch) % len(prompts)] if isinstance(cond, torch.Tensor) else cond
    with torch.inference_mode():
        unet(xt, t, encoder_hidden_states=text)  # warm-up
        totals, handles = timed_parts(unet)
        started = time.perf_counter()
        for _ in range(repeats):
            unet(xt, t, encoder_hidden_states=text)
        seconds = (time.perf_counter() - started) / repeats
        for h in handles:
            h.remove()
    return {"batch": batch, "text_tokens": int(text.shape[1]), "seconds_per_forward": round(seconds, 4),
            **{f"share: {k}": round(v / repeats / seconds, 4) for k, v in totals.items()}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    torch.manual_seed(0)
    results = {}
    zs = DiffusionClassifier.from_pretrained("embedded:zeroshot")
    results["embedded:zeroshot"] = measure(zs, args.batch, args.repeats, [f"a picture of a red shape {k}." for k in range(24)])
    with tempfile.TemporaryDirectory() as folder, quiet_hf_logging():
        tiny_sd_pipeline().save_pretrained(folder)
        sd = DiffusionClassifier.from_pretrained(folder)
        results["tiny SD pipeline (random weights)"] = measure(sd, args.batch, args.repeats, ["a photo of a dog", "a photo of a cat"])
    print(json.dumps({"device": f"cpu {platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}",
                      "results": results}, indent=1))


if __name__ == "__main__":
    main()
