"""Command line: ``python -m dclib COMMAND ...`` (see ``python -m dclib --help``).

Each command imports what it runs inside its function: ``--help`` and a mistyped option answer at once, without
loading diffusers, datasets or pyarrow for a command that was not asked for.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

from .adapters.base import COMPILE_MODES
from .errors import DclibError, InputError, check_finite
from .prompts import DEFAULT_TEMPLATE
from .settings import ClassifySettings
from .train.run import NAMES as TRAINABLE

DEFAULTS = ClassifySettings()  # the scoring options' defaults, as the library has them

EPILOG = """examples:
  python -m dclib classify dog.jpg --model stabilityai/stable-diffusion-2-base --dtype float16 \\
      --prompts prompts/pets_prompts.csv --schedule 5,1:25,250
  python -m dclib classify digit.png --model embedded:digits --schedule 100 --json
  python -m dclib calibrate runs/digits --out calibration.json   # then classify ... --calibration calibration.json
"""



def _batch_size(text: str):
    if text == "auto":
        return "auto"
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer or auto, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError("batch size must be >= 1")
    return value

def _add_model_args(p: argparse.ArgumentParser, lora: bool = True) -> None:
    g = p.add_argument_group("model")
    g.add_argument("--model", required=True,
                   help="hub id (e.g. stabilityai/stable-diffusion-2-base, facebook/DiT-XL-2-256), a local "
                        "diffusers pipeline folder, or embedded:NAME")
    g.add_argument("--dtype", default="float32", help="float32 (default), float16 or bfloat16")
    g.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    g.add_argument("--resolution", type=int, default=None,
                   help="image size in pixels (default: the model's native resolution)")
    g.add_argument("--revision", default=None, help="hub revision (branch, tag or commit)")
    g.add_argument("--autocast", default=None, choices=["auto", "none", "bfloat16", "float16"],
                   help="run the denoiser under mixed precision (errors stay float32); default auto: bf16 on "
                        "CUDA, off on CPU")
    g.add_argument("--compile", action="store_true",
                   help="torch.compile the denoiser for long runs (minutes of compilation first)")
    g.add_argument("--compile-mode", default=None, choices=COMPILE_MODES,
                   help="torch.compile mode, implies --compile (reduce-overhead: CUDA graphs on a GPU)")
    if lora:
        g.add_argument("--lora", default=None, metavar="PATH_OR_ID",
                       help="LoRA weights loaded into the model with the pipeline's load_lora_weights: a "
                            ".safetensors file, a folder holding one, or a hub id (pickled weights are refused)")


def _compile_arg(args) -> bool | str:
    return args.compile_mode or args.compile  # --compile-mode implies --compile


def _add_scoring_args(p: argparse.ArgumentParser, temperature: bool = True, template: bool = False) -> None:
    g = p.add_argument_group("conditionings")
    g.add_argument("--prompts", nargs="+", default=None,
                   help="text models: a prompt CSV (prompt,classname,classidx, as in the official repository), "
                        "a text file with one prompt per line, or the prompts themselves")
    if template:  # classify: --labels names the candidates of a text model too, as candidate_labels do
        g.add_argument("--labels", default=None,
                       help="comma-separated class names: for a text model each is filled into --template as one "
                            "prompt; for a class-conditional model, class indices or names (default: all)")
        g.add_argument("--template", default=None,
                       help=f"text models: the prompt each --labels name is filled into (default {DEFAULT_TEMPLATE!r})")
    else:
        g.add_argument("--labels", default=None,
                       help="class-conditional models: comma-separated class indices or names (default: all)")
    g = p.add_argument_group("scoring (paper defaults)")
    g.add_argument("--schedule", default=DEFAULTS.schedule,
                   help="N: Algorithm 1 with N evenly spaced timesteps; KEEP,..:TRIALS,..: Algorithm 2, e.g. "
                        "5,1:25,250 (keep 5 after 25 timesteps, then 1 after 250); paired:N[,alpha=A,strata=S]: "
                        "statistical pruning by paired tests over N timesteps (dclib.schedules); tree:auto[,n=N] or "
                        "tree:GROUPS.json[,n=N]: the same over a label tree, clustered from the prompts or given as "
                        "groups of class names (dclib.label_tree). Default 100")
    g.add_argument("--n-trials", type=int, default=DEFAULTS.n_trials, help="noises per timestep (default %(default)s)")
    g.add_argument("--loss", default=DEFAULTS.loss, choices=["l2", "l1", "huber"])
    g.add_argument("--objective", default=DEFAULTS.objective, choices=["uniform", "elbo", "vlb", "uniform+vlb"],
                   help="timestep weighting: uniform (w_t=1, the paper), elbo (exact ELBO weights), vlb / "
                        "uniform+vlb (the variational bound with the model's learned variance, as DiT's, or its "
                        "scheduler's fixed one; Table 5)")
    g.add_argument("--guidance", type=float, default=DEFAULTS.guidance,
                   help="classifier-free guidance weight w (eps~ = (1+w) eps(x,c) - w eps(x)); 0 = off")
    g.add_argument("--crop", type=int, default=DEFAULTS.crop, help="latent pixels cropped off each error-map edge")
    g.add_argument("--noise", default=DEFAULTS.noise,
                   help="normal, zero, expected_norm, truncated:LOW,HIGH (Table 12)")
    g.add_argument("--seed", type=int, default=DEFAULTS.seed, help="noise seed (noise is keyed by seed and image)")
    g.add_argument("--batch-size", type=_batch_size, default=DEFAULTS.batch_size,
                   help="(conditioning, sample) pairs per denoiser call, or auto (from free GPU memory; 256 on CPU)")
    if temperature:  # evaluate stores errors and predictions, not probabilities: calibrate the run afterwards
        g.add_argument("--temperature", type=float, default=None,
                       help="temperature of the posterior softmax(-error / T), per error element (default: the "
                            "model card's fitted temperature for embedded models, else the paper's eq. 6, T = 1 on "
                            "the summed squared error); --calibration overrides it")


def _add_output_args(p: argparse.ArgumentParser, json_help: str) -> None:
    p.add_argument("--json", action="store_true", help=json_help)
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")


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
    _add_scoring_args(p, template=True)
    p.add_argument("--top", type=int, default=5, help="classes to print (default 5)")
    p.add_argument("--calibration", default=None, metavar="FILE",
                   help="a calibration.json written by `calibrate`: also report calibrated probabilities")
    _add_output_args(p, json_help="print one JSON object per image")
    p.set_defaults(func=cmd_classify)

    p = sub.add_parser("interpret", help="DDIM-invert an image and reconstruct it under each conditioning (App. D)",
                       description="For every candidate, invert the image with DDIM under it up to --t-start and "
                                   "reconstruct it under the same candidate (Fig. 7); write a grid: input, "
                                   "reconstructions with their distance to the input, error maps.")
    p.add_argument("image")
    _add_model_args(p)
    p.add_argument("--prompts", nargs="+", default=None, help="text models: candidate prompts (or a prompt file)")
    p.add_argument("--labels", default=None, help="class-conditional models: class indices or names (default all)")
    p.add_argument("--invert-with", default=None,
                   help="invert once under this conditioning and reconstruct under every candidate instead: what "
                        "each class draws from the same noise (this conditioning gets a plain round trip)")
    p.add_argument("--t-start", type=int, default=500, help="timestep the inversion reaches (default 500)")
    p.add_argument("--steps", type=int, default=25, help="DDIM steps (default 25)")
    p.add_argument("--out", required=True, help="output PNG")
    p.set_defaults(func=cmd_interpret)

    p = sub.add_parser("train", help="train an embedded default model from its fixed seed (CPU)",
                       description="Reproduce an embedded model: train, keep the best EMA weights, measure test "
                                   "accuracy and write the model card. A text-to-image run (shapes, manyclass) that "
                                   "was stopped goes on from its folder's resume/ when run again with the same "
                                   "settings.")
    p.add_argument("name", choices=list(TRAINABLE), help="which embedded model")
    p.add_argument("--steps", type=int, default=None, help="training steps (default: the recipe's)")
    p.add_argument("--out", default=None, help="output folder (default: the packaged dclib/models/NAME)")
    p.add_argument("--eval-limit", type=int, default=None, help="test images to measure accuracy on (default all)")
    p.add_argument("--eval-schedule", default="100", help="schedule for the accuracy measurement (default 100)")
    p.add_argument("--measure-only", action="store_true",
                   help="do not train: re-measure the model already in the output folder and rewrite its card")
    p.add_argument("--fit-temperature", action="store_true",
                   help="do not train: fit the card's default temperature on the recipe's validation images and "
                        "report ECE on held-out test images (digits, mnist, mnist-learned-variance)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="classify a whole dataset into a resumable run folder",
                       description="Classify every image of a dataset into RUN_DIR (config.json, results.parquet, "
                                   "timings.parquet). Rerunning the same command resumes where it stopped; "
                                   "several processes (torchrun / accelerate launch) share the images.")
    _add_model_args(p)
    _add_scoring_args(p, temperature=False)
    g = p.add_argument_group("dataset")
    g.add_argument("--dataset", required=True,
                   help="embedded:NAME, an image folder (one subfolder per class), a save_to_disk folder, or a "
                        "Hugging Face dataset id")
    g.add_argument("--split", default=None, help="dataset split (default: the only one, else test)")
    g.add_argument("--template", default=DEFAULT_TEMPLATE,
                   help="text models without --prompts, on a dataset that carries no prompt CSV: one prompt per "
                        "class, this template filled with the dataset's class name (default %(default)r)")
    g.add_argument("--subset", default=None,
                   help="a file of dataset indices, or N: N rows drawn at random with --subset-seed")
    g.add_argument("--subset-seed", type=int, default=0, help="seed of --subset N (default 0)")
    g.add_argument("--limit", type=int, default=None,
                   help="evaluate N of the selected rows: a sample stratified by class, drawn with --subset-seed")
    g.add_argument("--limit-first", action="store_true", help="--limit takes the first N selected rows instead")
    g.add_argument("--image-column", default=None, help="image column (default: image, else the first image column)")
    g.add_argument("--label-column", default=None,
                   help="label column (default: label, else the first ClassLabel column)")
    g.add_argument("--label-mapping", default=None, choices=["by-name", "by-index"],
                   help="how dataset labels become the conditionings' classes (default by-name, and a mismatch "
                        "stops); by-index: label i is class i, for datasets whose labels carry no names")
    g = p.add_argument_group("run folder")
    g.add_argument("--out", required=True, metavar="RUN_DIR", help="run folder (created; resumed when it exists)")
    g.add_argument("--save-errors", action="store_true",
                   help="also store each image's raw error matrix [conditioning x sample] with its timesteps")
    g.add_argument("--retry-failed", action="store_true", help="evaluate images recorded as failed again")
    g.add_argument("--flush-rows", type=int, default=16, help="write a part file every N images (default 16)")
    g.add_argument("--flush-seconds", type=float, default=30.0,
                   help="... or every S seconds, whichever comes first (default 30)")
    _add_output_args(p, json_help="print the summary as one JSON object (the last line)")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("report", help="summarise a run folder written by evaluate",
                       description="Accuracy with 95%% Clopper-Pearson intervals, mean per-class accuracy, failed "
                                   "images, evaluations and seconds per image of a run folder (merging its parts "
                                   "into results.parquet first).")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("calibrate", help="fit calibrated probabilities on a labelled evaluate run",
                       description="Fit temperature (or vector) scaling of softmax(-error) on the labelled images of "
                                   "an evaluate run folder (or a saved ErrorSet .npz), write calibration.json and "
                                   "print ECE / NLL / Brier / accuracy before and after as one JSON object. Use "
                                   "the file with `classify --calibration`. Fit on the model, schedule and "
                                   "options you will classify with.")
    p.add_argument("source", metavar="RUN_DIR_OR_NPZ", help="an evaluate run folder or an ErrorSet .npz")
    p.add_argument("--method", default="temperature", choices=["temperature", "vector"],
                   help="temperature: one T (default); vector: per-class scale and bias (L2-regularised)")
    p.add_argument("--out", default="calibration.json", help="calibration file to write (default calibration.json)")
    p.add_argument("--bins", type=int, default=15, help="equal-width confidence bins for ECE (default 15)")
    p.add_argument("--l2", type=float, default=0.01, help="vector scaling: L2 weight towards temperature scaling")
    p.add_argument("--no-normalize", action="store_true",
                   help="do not subtract each image's lowest error (changes nothing for temperature scaling)")
    p.add_argument("--heldout", default=None, metavar="RUN_DIR_OR_NPZ",
                   help="also report before/after metrics on another labelled run (not used for fitting)")
    p.add_argument("--plot", default=None, metavar="PNG", help="write a reliability diagram (before / after)")
    p.set_defaults(func=cmd_calibrate)
    return parser


def _prompts_arg(values):
    if values is None:
        return None
    if len(values) == 1:
        return values[0]  # a file, or one prompt (or several separated by '|')
    return list(values)


def _settings(args):
    """The scoring arguments as one :class:`dclib.settings.ClassifySettings` (checked before any loading)."""
    return ClassifySettings.from_options(**{k: getattr(args, k) for k in (*ClassifySettings.KEYS, "batch_size")})


def cmd_classify(args) -> int:
    from .classifier import DiffusionClassifier

    settings = _settings(args)
    clf = DiffusionClassifier.from_pretrained(args.model, torch_dtype=args.dtype, device=args.device,
                                              resolution=args.resolution, revision=args.revision,
                                              autocast=args.autocast, compile=_compile_arg(args), lora=args.lora)
    conds = _classify_candidates(clf, args)
    calibrator = _load_calibrator(args, conds, settings) if args.calibration else None
    progress = not args.no_progress and sys.stderr.isatty() or (not args.no_progress and len(args.images) > 1)
    for path in args.images:
        result = clf.classify(path, prompts=conds, settings=settings, temperature=args.temperature,
                              progress=progress)
        d = result.to_dict(top=args.top)
        if calibrator is not None:  # "probabilities" stay the uncalibrated softmax(-error / temperature)
            calibrated = calibrator.transform(result.class_errors)
            d["calibrated_probabilities"] = [float(calibrated[i]) for i in d["class_indices"]]
            d["calibration"] = {"file": os.fspath(args.calibration), "method": calibrator.method,
                                "temperature": calibrator.temperature}
        if args.json:
            print(json.dumps({"image": os.fspath(path), **d}), flush=True)
            continue
        print(f"{path}: {d['prediction_name']}  ({d['evaluations']} denoiser evaluations, {d['seconds']:.2f} s)")
        if calibrator is None:
            print(f"  p: {d['probability_source']}")
        else:  # the calibration file's probabilities lead; the default ones stay beside them
            print(f"  p: calibrated by {args.calibration} ({calibrator.method} scaling); "
                  f"before: {d['probability_source']}")
        for rank, (name, err, prob) in enumerate(zip(d["classes"], d["mean_errors"], d["probabilities"]), 1):
            if calibrator is None:
                print(f"  {rank:>2}. {name:<40} error {err:.6f}  p {prob:.3f}")
            else:
                print(f"  {rank:>2}. {name:<40} error {err:.6f}  p {d['calibrated_probabilities'][rank - 1]:.3f}"
                      f"  (before {prob:.3f})")
    return 0


def _classify_candidates(clf, args):
    """The candidates of ``classify``: --prompts as they are, or --labels (class names filled into --template
    for a text model, as transformers' candidate_labels; class indices or names for a class-conditional one)."""
    if not clf.adapter.text_conditioned:
        if args.template is not None:
            raise InputError("--template is for text models; class-conditional models take no template, only "
                             "--labels (class indices or names)")
        return clf.candidates(_prompts_arg(args.prompts), args.labels)
    if args.prompts is not None and args.labels is not None:
        raise InputError("pass --prompts or --labels (class names filled into --template), not both")
    if args.prompts is not None and args.template is not None:
        raise InputError("--template fills the class names of --labels; --prompts are used as they are")
    return clf.candidates(_prompts_arg(args.prompts), candidate_labels=args.labels,
                          hypothesis_template=args.template)


def _load_calibrator(args, conds, settings):
    """The calibration file, refused for other classes; a warning when it was fitted on other settings."""
    from .calibration import Calibrator, source_mismatches

    cal = Calibrator.load(args.calibration, n_classes=conds.n_classes, class_names=conds.class_names)
    model = os.path.abspath(args.model) if os.path.isdir(args.model) else args.model
    # spelled as the run's config.json spells them
    differ = source_mismatches(cal, model=model, **settings.method_dict())
    if differ:
        print(f"dclib: warning: {args.calibration} was fitted with other settings ({'; '.join(differ)}); the error "
              "scale depends on them, so the calibrated probabilities may be off", file=sys.stderr, flush=True)
    return cal


def cmd_interpret(args) -> int:
    import matplotlib

    matplotlib.use("Agg")

    from .classifier import DiffusionClassifier
    from .interpret import grid_figure, invert_and_reconstruct, round_trips

    clf = DiffusionClassifier.from_pretrained(args.model, torch_dtype=args.dtype, device=args.device,
                                              resolution=args.resolution, revision=args.revision,
                                              autocast=args.autocast, compile=_compile_arg(args), lora=args.lora)
    conds = clf.conditionings(_prompts_arg(args.prompts), args.labels)
    x0, _ = clf.encode_image(args.image)
    if args.invert_with is None:
        _, recon = round_trips(clf.adapter, x0, conds.values, args.t_start, args.steps)
        title = f"each candidate inverted to t = {args.t_start} and reconstructed under itself"
    else:
        invert_with = int(args.invert_with) if not clf.adapter.text_conditioned else args.invert_with
        _, recon = invert_and_reconstruct(clf.adapter, x0, invert_with, list(conds.values), args.t_start, args.steps)
        title = f"inverted under {invert_with!r} to t = {args.t_start}, reconstructed under each candidate"
    names = [str(conds.class_names[c]) for c in conds.class_idx]
    fig = grid_figure(clf.adapter, [(x0, recon)], names, title=f"{title}; bottom: squared error maps")
    fig.savefig(args.out, dpi=120)
    print(f"wrote {args.out}")
    return 0


def cmd_train(args) -> int:
    from .train.run import train_embedded

    if args.fit_temperature:
        from .train.card_temperature import fit_card_temperature

        print(json.dumps(fit_card_temperature(args.name, model=args.out, progress=not args.no_progress)))
        return 0
    facts = train_embedded(args.name, out=args.out, steps=args.steps, eval_limit=args.eval_limit,
                           eval_schedule=args.eval_schedule, progress=not args.no_progress,
                           measure_only=args.measure_only)
    print(json.dumps({k: v for k, v in facts.items() if k not in ("history", "recipe")}))
    return 0


def cmd_evaluate(args) -> int:
    from . import runs

    summary = runs.evaluate(
        args.model, args.dataset, args.out, prompts=_prompts_arg(args.prompts), labels=args.labels,
        template=args.template, settings=_settings(args),
        loading=runs.LoadOptions(dtype=args.dtype, device=args.device, resolution=args.resolution,
                                 revision=args.revision, autocast=args.autocast, compile=_compile_arg(args),
                                 lora=args.lora),
        selection=runs.Selection(split=args.split, subset=args.subset, subset_seed=args.subset_seed,
                                 limit=args.limit, limit_mode="first" if args.limit_first else "stratified",
                                 image_column=args.image_column, label_column=args.label_column,
                                 label_mapping=args.label_mapping),
        run=runs.RunOptions(save_errors=args.save_errors, retry_failed=args.retry_failed, flush_rows=args.flush_rows,
                            flush_seconds=args.flush_seconds, progress=not args.no_progress))
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


def cmd_calibrate(args) -> int:
    from .calibration import Calibrator, json_safe, plot_reliability
    from .calibration_data import load_calibration_data

    check_finite("--l2", args.l2)  # the other float options are checked by the library objects that take them
    data = load_calibration_data(args.source)
    cal = Calibrator(method=args.method, normalize=not args.no_normalize, l2=args.l2, n_bins=args.bins)
    cal.fit(data.class_errors, data.labels, data.predictions, class_names=data.class_names, source=data.source)
    cal.save(args.out)
    if cal.fitted_on["at_bound"]:
        print("dclib: warning: the temperature hit the search bound: the calibration set has no finite optimum (every "
              "image right with a margin, or the errors carry no information); use more or harder images",
              file=sys.stderr, flush=True)
    out = {"calibration": os.fspath(args.out), "method": cal.method, "temperature": cal.temperature,
           "n": cal.fitted_on["n"], "at_bound": cal.fitted_on["at_bound"], "before": cal.fitted_on["before"],
           "after": cal.fitted_on["after"]}
    if args.heldout:
        held = load_calibration_data(args.heldout)
        cal.check(held.class_errors.shape[1], held.class_names, source=f"the calibrator fitted on {args.source}")
        out["heldout"] = {"source": os.fspath(args.heldout),
                          **cal.evaluate(held.class_errors, held.labels, held.predictions)}
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        shown = held if args.heldout else data
        before, after = cal.reliability(shown.class_errors, shown.labels, shown.predictions)
        ax = plot_reliability(before, after, title="held-out" if args.heldout else "calibration set")
        ax.figure.tight_layout()
        ax.figure.savefig(args.plot, dpi=120)
        plt.close(ax.figure)
        out["plot"] = os.fspath(args.plot)
    print(json.dumps(json_safe(out)), flush=True)
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
