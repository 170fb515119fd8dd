"""Command line: ``python -m dclib COMMAND ...`` (see ``python -m dclib --help``)."""
from __future__ import annotations

import argparse
import json
import os
import sys

from .errors import DclibError

EPILOG = """examples:
  python -m dclib classify dog.jpg --model stabilityai/stable-diffusion-2-base --dtype float16 \\
      --prompts prompts/pets_prompts.csv --schedule 5,1:25,250
  python -m dclib classify digit.png --model embedded:digits --schedule 100 --json
"""


def _add_model_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model")
    g.add_argument("--model", required=True,
                   help="hub id (e.g. stabilityai/stable-diffusion-2-base, facebook/DiT-XL-2-256), a local "
                        "diffusers pipeline folder, or embedded:NAME")
    g.add_argument("--dtype", default="float32", help="float32 (default), float16 or bfloat16")
    g.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    g.add_argument("--resolution", type=int, default=None,
                   help="image size in pixels (default: the model's native resolution)")
    g.add_argument("--revision", default=None, help="hub revision (branch, tag or commit)")
    g.add_argument("--autocast", default=None, choices=["bfloat16", "float16"],
                   help="run the denoiser under mixed precision (errors stay float32)")


def _add_scoring_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("conditionings")
    g.add_argument("--prompts", nargs="+", default=None,
                   help="text models: a prompt CSV (prompt,classname,classidx, as in the official repository), "
                        "a text file with one prompt per line, or the prompts themselves")
    g.add_argument("--labels", default=None,
                   help="class-conditional models: comma-separated class indices or names (default: all)")
    g = p.add_argument_group("scoring (paper defaults)")
    g.add_argument("--schedule", default="100",
                   help="N: Algorithm 1 with N evenly spaced timesteps; KEEP,..:TRIALS,..: Algorithm 2, e.g. "
                        "5,1:25,250 (keep 5 after 25 timesteps, then 1 after 250). Default 100")
    g.add_argument("--n-trials", type=int, default=1, help="noises per timestep (default 1)")
    g.add_argument("--loss", default="l2", choices=["l2", "l1", "huber"])
    g.add_argument("--objective", default="uniform", choices=["uniform", "elbo", "vlb", "uniform+vlb"],
                   help="timestep weighting: uniform (w_t=1, the paper), elbo (exact ELBO weights), vlb / "
                        "uniform+vlb (learned-variance models such as DiT, Table 5)")
    g.add_argument("--guidance", type=float, default=0.0,
                   help="classifier-free guidance weight w (eps~ = (1+w) eps(x,c) - w eps(x)); 0 = off")
    g.add_argument("--crop", type=int, default=0, help="latent pixels cropped off each error-map edge")
    g.add_argument("--noise", default="normal",
                   help="normal, zero, expected_norm, truncated:LOW,HIGH (Table 12)")
    g.add_argument("--seed", type=int, default=0, help="noise seed (noise is keyed by seed and image)")
    g.add_argument("--batch-size", type=int, default=64, help="denoiser batch size")
    g.add_argument("--temperature", type=float, default=1.0, help="posterior softmax temperature")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m dclib",
        description="Diffusion Classifier (Li et al., ICCV 2023): classify images with a conditional diffusion "
                    "model by which conditioning best predicts the added noise.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    from . import __version__
    parser.add_argument("--version", action="version", version=f"dclib {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("classify", help="classify one or more images and print the ranked classes",
                       description="Classify images; prints the ranked classes (or JSON with --json).")
    p.add_argument("images", nargs="+", help="image files (any format PIL reads)")
    _add_model_args(p)
    _add_scoring_args(p)
    p.add_argument("--top", type=int, default=5, help="classes to print (default 5)")
    p.add_argument("--json", action="store_true", help="print one JSON object per image")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=cmd_classify)

    p = sub.add_parser("interpret", help="DDIM-invert an image and reconstruct it under each conditioning (App. D)",
                       description="Invert the image with DDIM under one conditioning up to --t-start, reconstruct it "
                                   "under every candidate, and write a grid: input, reconstructions, error maps.")
    p.add_argument("image")
    _add_model_args(p)
    p.add_argument("--prompts", nargs="+", default=None, help="text models: candidate prompts (or a prompt file)")
    p.add_argument("--labels", default=None, help="class-conditional models: class indices or names (default all)")
    p.add_argument("--invert-with", default=None,
                   help="conditioning used for the inversion (default: the classifier's prediction)")
    p.add_argument("--t-start", type=int, default=500, help="timestep the inversion reaches (default 500)")
    p.add_argument("--steps", type=int, default=25, help="DDIM steps (default 25)")
    p.add_argument("--out", required=True, help="output PNG")
    p.set_defaults(func=cmd_interpret)

    p = sub.add_parser("train", help="train an embedded default model from its fixed seed (CPU)",
                       description="Reproduce an embedded model: train, keep the best EMA weights, measure test "
                                   "accuracy and write the model card.")
    p.add_argument("name", choices=["digits", "mnist", "shapes", "shapes-clip"], help="which embedded model")
    p.add_argument("--steps", type=int, default=None, help="training steps (default: the recipe's)")
    p.add_argument("--out", default=None, help="output folder (default: the packaged dclib/models/NAME)")
    p.add_argument("--eval-limit", type=int, default=None, help="test images to measure accuracy on (default all)")
    p.add_argument("--eval-schedule", default="100", help="schedule for the accuracy measurement (default 100)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="classify a whole dataset into a resumable run folder",
                       description="Classify every image of a dataset into RUN_DIR (config.json, results.parquet, "
                                   "timings.parquet). Rerunning the same command resumes where it stopped; "
                                   "several processes (torchrun / accelerate launch) share the images.")
    _add_model_args(p)
    _add_scoring_args(p)
    g = p.add_argument_group("dataset")
    g.add_argument("--dataset", required=True,
                   help="embedded:NAME, an image folder (one subfolder per class), a save_to_disk folder, or a "
                        "Hugging Face dataset id")
    g.add_argument("--split", default=None, help="dataset split (default: the only one, else test)")
    g.add_argument("--subset", default=None,
                   help="a file of dataset indices, or N: N rows drawn at random with --subset-seed")
    g.add_argument("--subset-seed", type=int, default=0, help="seed of --subset N (default 0)")
    g.add_argument("--limit", type=int, default=None, help="evaluate only the first N selected rows")
    g.add_argument("--image-column", default=None, help="image column (default: image, else the first image column)")
    g.add_argument("--label-column", default=None,
                   help="label column (default: label, else the first ClassLabel column)")
    g = p.add_argument_group("run folder")
    g.add_argument("--out", required=True, metavar="RUN_DIR", help="run folder (created; resumed when it exists)")
    g.add_argument("--save-errors", action="store_true",
                   help="also store each image's raw error matrix [conditioning x sample] with its timesteps")
    g.add_argument("--retry-failed", action="store_true", help="evaluate images recorded as failed again")
    g.add_argument("--flush-rows", type=int, default=16, help="write a part file every N images (default 16)")
    g.add_argument("--flush-seconds", type=float, default=30.0,
                   help="... or every S seconds, whichever comes first (default 30)")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object (the last line)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("report", help="summarise a run folder written by evaluate",
                       description="Accuracy with 95%% Clopper-Pearson intervals, mean per-class accuracy, failed "
                                   "images, evaluations and seconds per image of a run folder (merging its parts "
                                   "into results.parquet first).")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    p.set_defaults(func=cmd_report)
    return parser


def _prompts_arg(values):
    if values is None:
        return None
    if len(values) == 1:
        return values[0]  # a file, or one prompt (or several separated by '|')
    return list(values)


def cmd_classify(args) -> int:
    from .classifier import DiffusionClassifier

    clf = DiffusionClassifier.from_pretrained(args.model, torch_dtype=args.dtype, device=args.device,
                                              resolution=args.resolution, revision=args.revision,
                                              autocast=args.autocast)
    conds = clf.conditionings(_prompts_arg(args.prompts), args.labels)
    progress = not args.no_progress and sys.stderr.isatty() or (not args.no_progress and len(args.images) > 1)
    for path in args.images:
        result = clf.classify(path, prompts=conds, schedule=args.schedule, n_trials=args.n_trials,
                              seed=args.seed, loss=args.loss, objective=args.objective, guidance=args.guidance,
                              crop=args.crop, noise=args.noise, batch_size=args.batch_size,
                              temperature=args.temperature, progress=progress)
        if args.json:
            print(json.dumps({"image": os.fspath(path), **result.to_dict(top=args.top)}), flush=True)
            continue
        d = result.to_dict(top=args.top)
        print(f"{path}: {d['prediction_name']}  ({d['evaluations']} denoiser evaluations, {d['seconds']:.2f} s)")
        for rank, (name, err, prob) in enumerate(zip(d["classes"], d["mean_errors"], d["probabilities"]), 1):
            print(f"  {rank:>2}. {name:<40} error {err:.6f}  p {prob:.3f}")
    return 0


def cmd_interpret(args) -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .classifier import DiffusionClassifier
    from .interpret import invert_and_reconstruct, to_image

    clf = DiffusionClassifier.from_pretrained(args.model, torch_dtype=args.dtype, device=args.device,
                                              resolution=args.resolution, revision=args.revision)
    conds = clf.conditionings(_prompts_arg(args.prompts), args.labels)
    x0, _ = clf.encode_image(args.image)
    if args.invert_with is None:
        result = clf.classify(args.image, prompts=conds, schedule=20)
        invert_with = conds.values[result.best_conditioning]
    else:
        invert_with = int(args.invert_with) if not clf.adapter.text_conditioned else args.invert_with
    _, recon = invert_and_reconstruct(clf.adapter, x0, invert_with, list(conds.values), args.t_start, args.steps)
    n = len(conds) + 1
    fig, axes = plt.subplots(2, n, figsize=(1.6 * n, 3.4), squeeze=False)
    gray = {"cmap": "gray"} if clf.adapter.image_channels == 1 else {}
    axes[0, 0].imshow(to_image(clf.adapter, x0), **gray)
    axes[0, 0].set_title("input", fontsize=8)
    for k, value in enumerate(conds.values, start=1):
        axes[0, k].imshow(to_image(clf.adapter, recon[k - 1]), **gray)
        axes[0, k].set_title(str(conds.class_names[conds.class_idx[k - 1]])[:18], fontsize=7)
        axes[1, k].imshow(((recon[k - 1] - x0) ** 2).mean(0), cmap="magma")
    for ax in axes.flat:
        ax.set_xticks([]), ax.set_yticks([])
    axes[1, 0].axis("off")
    fig.suptitle(f"inverted under {invert_with!r} to t = {args.t_start}; bottom: squared error maps", fontsize=9)
    fig.tight_layout()
    fig.savefig(args.out, dpi=120)
    print(f"wrote {args.out}")
    return 0


def cmd_train(args) -> int:
    from .train.run import train_embedded

    facts = train_embedded(args.name, out=args.out, steps=args.steps, eval_limit=args.eval_limit,
                           eval_schedule=args.eval_schedule, progress=not args.no_progress)
    print(json.dumps({k: v for k, v in facts.items() if k not in ("history", "recipe")}))
    return 0


def cmd_evaluate(args) -> int:
    from . import runs

    summary = runs.evaluate(
        args.model, args.dataset, args.out, prompts=_prompts_arg(args.prompts), labels=args.labels,
        schedule=args.schedule, n_trials=args.n_trials, loss=args.loss, objective=args.objective,
        guidance=args.guidance, crop=args.crop, noise=args.noise, seed=args.seed, batch_size=args.batch_size,
        dtype=args.dtype, device=args.device, resolution=args.resolution, revision=args.revision,
        autocast=getattr(args, "autocast", None), split=args.split,
        subset=args.subset, subset_seed=args.subset_seed, limit=args.limit, image_column=args.image_column,
        label_column=args.label_column, save_errors=args.save_errors, retry_failed=args.retry_failed,
        flush_rows=args.flush_rows, flush_seconds=args.flush_seconds, progress=not args.no_progress)
    if summary is None:  # not the main process
        return 0
    if args.json:
        print(json.dumps(summary), flush=True)
    else:
        print(runs.format_summary(summary), flush=True)
    return 0


def cmd_report(args) -> int:
    from . import runs

    summary = runs.report(args.run_dir)
    print(json.dumps(summary) if args.json else runs.format_summary(summary), flush=True)
    return 0


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return args.func(args)
    except DclibError as err:
        print(f"dclib: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("dclib: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
