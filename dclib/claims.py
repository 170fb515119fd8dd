"""The paper's claims, registered before any result (:data:`CLAIMS`), with the effects each is powered for,
read from the paper's CSVs, and the dated amendments made since the first registration.

Each :class:`~dclib.registration.Claim` states what the paper says (quoted from its text or captions, with the
figure or table), the comparisons a page runs, the direction the paper predicts, the statistic and alpha. A page
displays its claim first, runs its experiment, and passes per-image outcomes to ``Claim.evaluate``; the outcome
rule lives in :mod:`dclib.verdicts`, the same for every claim. Nothing here depends on what the results are.
:func:`powered_size` turns a registration into the sample size a preset runs (``book/params.yml``).
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import yaml

from .errors import InputError
from .paper import paper_cell, paper_table, text_effect
from .registration import ALPHA, Amendment, Claim, Planning, Verdict, points  # noqa: F401 (pages import them here)

# Tables 6-7: the largest accuracy loss the paper reports from pruning (CLIP top-20 on Pets, 87.3 -> 86.4),
# rounded up; "keeps accuracy" is tested as "loses at most this much".
KEEPS_ACCURACY_MARGIN = 0.01
# The class-scaling extension (dclib.class_scaling): the pruned configuration may lose at most this much accuracy
# (95% lower bound) and spend at most this share of the reference's evaluations; ours, not the paper's.
SCALING_MARGIN = 0.03
SCALING_COST_SHARE = 0.05


# Where the paper gives no number (its figures, a sentence of its text), each comparison is powered for this
# smallest effect of interest instead: ours, stated as ours, not read off the paper.
INTEREST = 0.05
INTEREST_SOURCE = ("the paper gives no number: 5 points of accuracy, the smallest effect of interest registered "
                   "here (not the paper's)")


def paper_gap(name: str, column: str, key: str, better, worse, **where) -> tuple[float, str]:
    """(the paper's accuracy difference better - worse as a fraction, where it comes from) for two rows of a paper
    table told apart by ``key`` (other rows fixed by ``where``)."""
    high, low = (paper_cell(name, column, **where, **{key: v}) for v in (better, worse))
    fixed = "".join(f", {k} {v}" for k, v in where.items())
    return round((high - low) / 100, 6), f"{name} ({column}{fixed}): {better} {high:g} vs {worse} {low:g}"


def noise_sampling_effects() -> tuple[dict, str]:
    """Table 12: N(0, I) against each other noise distribution, one effect per comparison label of the page."""
    table = paper_table("table12_noise_sampling").set_index("noise_distribution").pets_accuracy_10pct_subset
    reference = "eps ~ N(0 I)"
    return ({f"N(0, I) vs {k}": round(float(table[reference] - v) / 100, 6)
             for k, v in table.items() if k != reference},
            f"table12_noise_sampling (Pets 10% subset): N(0, I) {table[reference]:g} against each other row")


def smallest_paper_gap(name: str, key: str, better, others, columns) -> tuple[float, str]:
    """The smallest of the paper's differences ``better`` - each of ``others`` over ``columns`` (datasets or
    categories) of a table: the effect every one of those comparisons at least shows."""
    gap, source = min((paper_gap(name, c, key, better, o) for o in others for c in columns), key=lambda g: g[0])
    return gap, f"{source}, the smallest over {', '.join(map(str, columns))}" + (
        f" and {', '.join(others)}" if len(others) > 1 else "")


def mean_paper_gap(name: str, key: str, better, worse, columns) -> tuple[float, str]:
    """The paper's mean difference ``better`` - ``worse`` over ``columns`` (datasets) of a table, each dataset
    weighted alike: the effect a claim "on average over the datasets" is powered for."""
    gaps = [paper_gap(name, c, key, better, worse)[0] for c in columns]
    return round(sum(gaps) / len(gaps), 6), f"{name}: {better} minus {worse}, the mean over {', '.join(columns)}"


def compositional_effects() -> tuple[dict, str]:
    """Table 3: per swap category, Diffusion Classifier's text score minus the better of the two contrastive
    models' (the claim is "better than both")."""
    baselines = ("CLIP ViT-L/14", "OpenCLIP ViT-H/14")
    effects = {f"{c} swaps": smallest_paper_gap("table3_winoground_text_score", "model", "Diffusion Classifier",
                                                baselines, [c])[0] for c in ("object", "relation", "both")}
    return effects, "table3_winoground_text_score: Diffusion Classifier minus the better of CLIP ViT-L/14 and " \
                    "OpenCLIP ViT-H/14 in each category"


def _registered(value_and_source: tuple, paper: bool = True) -> dict:
    return {"effect": value_and_source[0], "effect_source": value_and_source[1], "paper_effect": paper}


_INTEREST = _registered((INTEREST, INTEREST_SOURCE), paper=False)
ZERO_SHOT_DATASETS = ("food", "cifar10", "aircraft", "pets", "flowers", "stl10", "imagenet", "objectnet")


AMENDED = "2026-12-05"  # the amendments below were committed on this date, before the pages were re-run
#: every claim with a registered effect got it by this amendment (the original registration had none)
EFFECT_REGISTERED = Amendment(
    AMENDED, "Registered the effect each comparison is powered for, and with it the outcome *paper's effect "
    "excluded* and the power and n for 80% of a *not detected*.",
    "the table or sentence named in the registered effect's source (for an effect of interest: none).",
    "'Not detected' alone could not tell a test that could not have seen the paper's effect from one that rules "
    "it out.", {"effect": None, "effect_source": "", "paper_effect": True})
GATE_ADDED = Amendment(
    AMENDED, "Added the validity gate: a task on which the classifier is not above chance does not count.",
    "the claim is about Diffusion Classifier, which on the paper's tasks is far above chance.",
    "The embedded text-to-image models ignore position words (the zero-shot table page shows it by "
    "classification and by generation); a task that such a model cannot do tests the model, not the claim.",
    {"gate": False})


def _plan(rate: float, measured: bool = True) -> Planning:
    if measured:
        return Planning(rate, "a stated bound: the largest discordance among this claim's comparisons in the "
                              "2026-12-05 book build (on the test images themselves, not a pilot), rounded up to "
                              "the next 5 points")
    return Planning(rate, "a stated bound, not measured")


def _claims(*claims: Claim) -> dict[str, Claim]:
    return {c.key: c for c in claims}


SD_PETS = "Stable Diffusion 2.0, Oxford-IIIT Pets, zero-shot"
DIT_IMAGENET = "DiT-XL/2 trained on ImageNet, ImageNet validation set"

CLAIMS = _claims(
    Claim("error_variance", "Fig. 2, Sec. 3.3",
          "By using the same (t_i, eps_i) for each conditioning input, our estimate of p(c | x) is much more "
          "accurate.", "Stable Diffusion 2.0; Fig. 2 shows the errors of one Pets image under two prompts",
          "classification with noise shared across the classes against independent noise per class, on the "
          "same images and timesteps", "mcnemar",
          narrowed="The paper shows the variance argument on one image; the accuracy gain is tested here.",
          **_INTEREST, planning=_plan(0.30), amendments=(EFFECT_REGISTERED,)),
    Claim("single_timestep", "Fig. 3",
          "Accuracy is highest when an intermediate amount of noise is added (t = 500).", SD_PETS,
          "one timestep per class: the timestep of the grid nearest t = 500 against the smallest and against the "
          "largest timestep of the grid", "mcnemar", **_INTEREST, planning=_plan(0.45),
          amendments=(EFFECT_REGISTERED,)),
    Claim("timestep_strategies", "Fig. 4",
          "All strategies improve when using the average error of more samples, but simply using evenly spaced "
          "timesteps is best.", SD_PETS,
          "at the largest trial count, N evenly spaced timesteps over the full range against every strategy that "
          "is not evenly spaced: Uniform, {0}, {500}, {1000}, {0, 500, 1000}, {475, 500, 525}", "mcnemar", **_INTEREST,
          planning=_plan(0.65), amendments=(EFFECT_REGISTERED,)),
    Claim("guidance", "Fig. 8",
          "w = 0 (i.e., no classifier-free guidance) performs best.", SD_PETS + ", w in [-2, 10]",
          "w = 0 against every other guidance weight of the page, over the paper's range [-2, 10]", "mcnemar",
          **_INTEREST, planning=_plan(0.30, measured=False), amendments=(EFFECT_REGISTERED,)),
    Claim("cropping", "Fig. 9",
          "Any amount of cropping reduces accuracy.", SD_PETS + ", 0-30 latent pixels cropped off each side",
          "no crop against every crop of the page", "mcnemar", **_INTEREST, planning=_plan(0.30, measured=False),
          amendments=(EFFECT_REGISTERED,)),
    Claim("loss_zero_shot", "Table 8, App. C",
          "The Huber loss [...] roughly achieves the same performance as the theoretically-justified squared l2 "
          "loss (Pets: 86.6 vs 86.3).", SD_PETS, "Huber against squared l2 on the same denoiser outputs",
          "noninferiority", margin=KEEPS_ACCURACY_MARGIN,
          **_registered(paper_gap("table8_zero_shot_loss", "pets", "loss", "huber", "squared_l2")),
          planning=_plan(0.05), amendments=(EFFECT_REGISTERED,),
          narrowed=f"'Roughly the same' is tested as Huber losing at most {100 * KEEPS_ACCURACY_MARGIN:g} point. "
                   "The paper's other Table 8 finding, l1 better on roughly half of its eight datasets, needs "
                   "several datasets and is shown beside ours but not tested."),
    Claim("loss_supervised", "Table 9",
          "With the supervised DiT classifier, the squared l2 loss beats l1 (77.5 vs 74.9 at 256 px).",
          DIT_IMAGENET, "squared l2 against l1 on the same denoiser outputs", "mcnemar",
          **_registered(paper_gap("table9_supervised_loss", "imagenet", "loss", "squared_l2", "l1", resolution=256)),
          planning=_plan(0.05), amendments=(EFFECT_REGISTERED,)),
    Claim("noise_sampling", "Table 12",
          "Every importance-sampling variant of eps underperforms eps ~ N(0, I).",
          "Stable Diffusion 2.0, a 10% subset of Pets",
          "eps ~ N(0, I) against each other noise distribution, same images, timesteps and noise keys", "mcnemar",
          **_registered(noise_sampling_effects()), planning=_plan(0.30, measured=False),
          amendments=(EFFECT_REGISTERED,)),
    Claim("noise_sampling_text", "Table 12 (App. G text)",
          "Table 12 shows that none of these importance sampling strategies improve accuracy.",
          "Stable Diffusion 2.0, a 10% subset of Pets",
          "eps ~ N(0, I) against each other noise distribution, non-inferiority: N(0, I) loses at most the margin to "
          "each", "noninferiority", margin=KEEPS_ACCURACY_MARGIN, **_registered(noise_sampling_effects()),
          planning=_plan(0.10, measured=False),
          narrowed=f"'None improves' is tested as N(0, I) losing at most {100 * KEEPS_ACCURACY_MARGIN:g} point to "
                   "each strategy.",
          amendments=(Amendment(
              AMENDED, "Registered the text's sentence as its own claim, beside the caption's.",
              "App. G: \"Table 12 shows that none of these importance sampling strategies improve accuracy.\" "
              "(the caption says more: every one underperforms)",
              "The paper makes two claims about Table 12, a strong one in the caption and a weaker one in the text; "
              "one claim per sentence.", None),)),
    Claim("objective_elbo", "Sec. 3.2 (eq. 3)",
          "We found that deviating from the uniform weighting used at training time hurts accuracy.",
          "Stable Diffusion 2.0, zero-shot (no numbers given)",
          "uniform weighting against the ELBO weights w_t of eq. 3 (sigma_t^2 from the model's scheduler)",
          "mcnemar", **_INTEREST, planning=_plan(0.05), amendments=(EFFECT_REGISTERED,)),
    Claim("objective_vlb", "Table 5",
          "The uniform l2 weighting does best; the variational bound is clearly worse (71.6 vs 77.5 at 256 px).",
          DIT_IMAGENET, "uniform l2 against the variational bound (VLB) of a learned-variance model", "mcnemar",
          **_registered(paper_gap("table5_dit_objective", "imagenet", "objective", "l2", "vlb", resolution=256)),
          planning=_plan(0.05), amendments=(EFFECT_REGISTERED,)),
    Claim("adaptive_evaluation", "Tables 6-7, Sec. 4.2",
          "The adaptive schedules keep accuracy at a fraction of the evaluations; pre-pruning with a weak "
          "discriminative model cuts inference time further at little accuracy cost.",
          "Stable Diffusion 2.0, Pets: KeepList (5, 1), TrialList (25, 250); CLIP ResNet-50 top-20 pre-pruning",
          "Algorithm 2 with the page's first adaptive schedule, and a weak zero-shot model's top-k followed by "
          "Algorithm 1, each against Algorithm 1 on the full grid", "noninferiority", margin=KEEPS_ACCURACY_MARGIN,
          **_registered(paper_gap("table7_inference_time", "pets", "row", "With CLIP RN50 top-20 pruning accuracy",
                                  "Diffusion Classifier accuracy")),
          planning=_plan(0.20), amendments=(EFFECT_REGISTERED,),
          narrowed=f"'Keeps accuracy' is tested as losing at most {100 * KEEPS_ACCURACY_MARGIN:g} point (the "
                   "paper's largest loss from pre-pruning in Table 7 is 0.9 points)."),
    Claim("version_sweep", "Table 10",
          "Within SD 1.x, accuracy tends to rise with more training (exceptions: CIFAR10, STL10).",
          "Stable Diffusion 1.1-1.5 (successive releases of one training run), eight zero-shot datasets",
          "accuracy across the checkpoints in training order, one trend", "trend",
          narrowed="SD 2.0 -> 2.1 (which the paper finds lowers accuracy) has no analogue here."),
    Claim("zero_shot_synthetic", "Table 1",
          "Zero-shot Diffusion Classifier significantly outperforms the baseline trained on data generated by "
          "the same diffusion model.", "Stable Diffusion 2.0, eight zero-shot datasets",
          "Diffusion Classifier against a CNN trained on images generated by the same model, on every task",
          "mcnemar", gate=True,
          **_registered(smallest_paper_gap("table1_zero_shot", "method", "Diffusion Classifier",
                                           ("Synthetic SD Data",), ZERO_SHOT_DATASETS)),
          labels=("*: DC vs synthetic data",), planning=_plan(0.75), amendments=(EFFECT_REGISTERED, GATE_ADDED)),
    Claim("zero_shot_contrastive", "Table 1",
          "Zero-shot Diffusion Classifier outperforms CLIP ResNet-50.",
          "Stable Diffusion 2.0 vs CLIP ResNet-50, eight zero-shot datasets",
          "Diffusion Classifier against the contrastive model trained on the same image-caption data, on the "
          "tasks' images pooled (each task with its own images)", "mcnemar",
          **_registered(mean_paper_gap("table1_zero_shot", "method", "Diffusion Classifier", "CLIP ResNet-50",
                                       ZERO_SHOT_DATASETS)),
          labels=("pooled over the tasks (DC vs contrastive)",), planning=_plan(0.35),
          narrowed="The contrastive model here is trained on the diffusion model's own data, not on a web-scale "
                   "corpus like CLIP's.",
          amendments=(EFFECT_REGISTERED, Amendment(
              AMENDED, "Tested on the tasks pooled, powered for the paper's mean difference over its eight datasets "
              "(3.3 points), instead of on every task with the Pets difference.",
              "Sec. 6.1: \"our method outperforms CLIP ResNet-50 and is competitive with OpenCLIP ViT-H\"; Table 1 "
              "has Diffusion Classifier behind CLIP ResNet-50 on Food-101 (77.7 vs 81.1).",
              "The original registration was stricter than the paper: the paper's own Table 1 fails 'on every task'.",
              {"comparisons": "Diffusion Classifier against the contrastive model trained on the same image-caption "
                              "data, on every task",
               "effect": paper_gap("table1_zero_shot", "pets", "method", "Diffusion Classifier", "CLIP ResNet-50")[0],
               "effect_source": paper_gap("table1_zero_shot", "pets", "method", "Diffusion Classifier",
                                          "CLIP ResNet-50")[1],
               "labels": ("*: DC vs contrastive",), "planning": _plan(0.80)}))),
    Claim("compositional", "Table 3",
          "Diffusion Classifier is significantly better than both contrastive baselines in each of the three "
          "swap categories (object, relation, both).", "Stable Diffusion 2.0 vs CLIP ViT-L/14 and OpenCLIP "
          "ViT-H/14, Winoground text score",
          "text score of Diffusion Classifier against the contrastive model in each Winoground swap category",
          "mcnemar", **_registered(compositional_effects()), gate=True, planning=_plan(0.70),
          amendments=(EFFECT_REGISTERED, GATE_ADDED)),
    Claim("supervised_robustness", "Table 4, Fig. 6",
          "On ImageNet-A, DiT's Diffusion Classifier lies far above the linear fit of in- vs out-of-distribution "
          "accuracy of discriminative models trained on the same labels (effective robustness; no such gain on "
          "ImageNet-V2 or ObjectNet).", DIT_IMAGENET + " vs ResNets and ViTs; ImageNet-A, 99.5% Clopper-Pearson "
          "intervals", "Diffusion Classifier's accuracy on the page's claim set (ImageNet-A; on the embedded models the "
          "adversarial split: shifted test images that a held-out CNN misclassifies, built as ImageNet-A was) against "
          "the accuracy the discriminative models' probit-scaled line predicts at its clean accuracy on the same "
          "classes, or chance where that is higher", "binomial",
          **_registered(text_effect("fig6_imagenet_a_effective_robustness")),
          planning=Planning(0.30, "a stated bound on the line's prediction: 25.6% in the 2026-12-05 book build, "
                                  "rounded up to the next 5 points"), amendments=(EFFECT_REGISTERED,),
          narrowed="The line's prediction is treated as a fixed rate (its own fitting error is not propagated), and "
                   "it is one line where the paper breaks it at ResNet-50's accuracy; on the embedded models the "
                   "shifts are synthetic corruptions, not natural photos."),
    Claim("class_scaling", "App. B, Table 7 (ImageNet), at up to 200 classes",
          "The issue with ImageNet is that Diffusion Classifier inference time still approximately scales linearly "
          "with the number of classes, even when using the adaptive strategy. [...] Using Diffusion Classifier to "
          "choose among the top 20 class predictions made by CLIP ResNet-50 for an image greatly reduces inference "
          "time, while even improving performance.",
          "Stable Diffusion 2.0, ImageNet (1,000 classes): Algorithm 2 against CLIP ResNet-50 top-20 pruning "
          "followed by Algorithm 2",
          "at the largest class count, the best pruned configuration (chosen on development images before the "
          "measurement: top-k pre-pruning with the contrastive model followed by Algorithm 1, paired pruning or a "
          f"label tree, at no more than {100 * SCALING_COST_SHARE:g}% of the reference's evaluations) against the "
          "reference fixed in advance, "
          "Algorithm 1 with 25 timesteps on every class", "noninferiority", margin=SCALING_MARGIN,
          **_registered(paper_gap("table7_inference_time", "imagenet", "row", "With CLIP RN50 top-20 pruning accuracy",
                                  "Diffusion Classifier accuracy")),
          planning=_plan(0.05, measured=False),
          narrowed="Not a claim of the paper's tables but of its Appendix B at the class counts this machine can "
                   "score (25 to 200 classes of the many-class benchmark, not ImageNet's 1,000); the margin, "
                   f"{100 * SCALING_MARGIN:g} points, and the cost bound, {100 * SCALING_COST_SHARE:g}% of the "
                   "reference's evaluations, are this book's, not the paper's. The "
                   "slope of evaluations per image against classes is reported beside the verdict, not tested."),
    Claim("interpretability", "Fig. 7, App. D",
          "Inverting with DDIM and reconstructing under the same prompt, the correct class name reconstructs the "
          "image's class-descriptive features better than incorrect ones.",
          "Stable Diffusion 2.0, a few Pets and ImageNet images (qualitative)",
          "for each image, invert and reconstruct under every candidate prompt; how often the true class's "
          "reconstruction is the closest, against the chance rate 1 / number of classes", "binomial", **_INTEREST,
          planning=Planning(0.10, "1 / 10 classes of the book's digits"), amendments=(EFFECT_REGISTERED,),
          narrowed="The paper shows examples; the rate over images is tested here."),
)


def powered_size(powered, at_most: int, per: int = 1) -> int:
    """A preset's sample-size parameter from the claims it tests (``book/params.yml``: ``{powered: KEY or [KEYS],
    at_most: N, per: K}``): the largest :meth:`Claim.sample_size` of those claims within ``at_most`` images per
    comparison (the data or the budget), in units of ``per`` images (e.g. 2 captioned items per picture pair)."""
    keys = [powered] if isinstance(powered, str) else list(powered)
    unknown = [k for k in keys if k not in CLAIMS]
    if unknown or not keys:
        raise InputError(f"powered: no claim {', '.join(unknown) or '(none given)'}; known: {', '.join(CLAIMS)}")
    n = max(CLAIMS[k].sample_size(at_most) for k in keys)
    return -(-n // int(per))


def resolve_sizes(params: dict) -> dict:
    """``params`` with every ``{powered: ..., at_most: ...}`` value replaced by its :func:`powered_size`."""
    out = {}
    for name, value in params.items():
        if isinstance(value, dict) and "powered" in value:
            wrong = sorted(set(value) - {"powered", "at_most", "per"}) or (["at_most"] if "at_most" not in value
                                                                          else [])
            if wrong:
                raise InputError(f"{name}: a powered size takes powered, at_most (required) and per; check "
                                 f"{', '.join(wrong)}")
            value = powered_size(**value)
        out[name] = value
    return out


def preset_sizes(preset: dict) -> dict[str, int]:
    """claim key -> images per comparison that one preset's entries of book/params.yml (page -> parameters) give
    it through their ``{powered: ...}`` sizes."""
    sizes: dict[str, int] = {}
    for params in preset.values():
        resolved = resolve_sizes(params or {})
        for name, value in (params or {}).items():
            if isinstance(value, dict) and "powered" in value:
                keys = [value["powered"]] if isinstance(value["powered"], str) else value["powered"]
                sizes.update({k: resolved[name] * int(value.get("per", 1)) for k in keys})
    return sizes


# Beside the paper's CSVs (dclib.paper reads book/paper the same way), so a page run from any folder finds it.
BOOK_PARAMS = Path(__file__).resolve().parent.parent / "book" / "params.yml"


def book_preset(name: str) -> dict:
    """One preset's entries of ``book/params.yml`` (page -> parameters)."""
    if not BOOK_PARAMS.exists():
        raise InputError(f"{BOOK_PARAMS} not found: the presets ship with a checkout of the repository, not with "
                         "an installed package")
    presets = yaml.safe_load(BOOK_PARAMS.read_text()) or {}
    if name not in presets:
        raise InputError(f"book/params.yml has no preset {name!r}; it has {', '.join(sorted(presets))}")
    return presets[name] or {}


def sample_size_table(preset: dict | str = "book") -> pd.DataFrame:
    """Every registration with a power calculation and the n a preset gives it (:func:`preset_sizes`); ``preset``
    is a preset's entries or its name in ``book/params.yml``. Columns: figure, claim, registered effect, planning
    rate, n for 80% (:meth:`Claim.n_for_power`), preset n (images per comparison) and power there
    (:meth:`Claim.power_at`)."""
    sizes = preset_sizes(book_preset(preset) if isinstance(preset, str) else preset)
    rows = []
    for key, claim in CLAIMS.items():
        needed = claim.n_for_power()
        if needed is None:
            continue
        n = sizes.get(key)
        effects = claim.effects()
        rows.append({"figure": claim.figure, "claim": key,
                     "registered effect": (points(effects[0]) if len(set(effects)) == 1 else
                                           f"{points(min(effects))} to {points(max(effects))}")
                                          + ("" if claim.paper_effect else " (of interest)")
                                          + (f", margin {points(claim.margin)}" if claim.margin else ""),
                     "planning rate": f"{100 * claim.planning.rate:g}%"
                                      + (" (chance)" if claim.statistic == "binomial" else " discordant"),
                     "n for 80%": f"{needed:,}", "preset n": "" if n is None else f"{n:,}",
                     "power there": "" if n is None else f"{100 * claim.power_at(n):.0f}%"})
    return pd.DataFrame(rows)


def verdict_inputs(table, sets: dict, label: str, pair: tuple[str, str], dataset: str, n_timesteps: int,
                   n_images: int | None = None) -> dict:
    """The keyword arguments of ``Claim.evaluate`` for one pair of settings of a ``compare_settings`` run.

    ``table`` is its table with a ``model`` column (one model), ``sets`` its error sets and ``pair`` the two setting
    names in the order the claim takes them. ``setting`` reads "MODEL, N images of DATASET, T timesteps" (N: the
    table's image count unless ``n_images`` is given) and ``ours`` lists every setting's accuracy in table order,
    e.g. "Accuracy: l2 60.0%, l1 55.0%, huber 60.0%.".
    """
    n = table.n.iloc[0] if n_images is None else n_images
    return {"outcomes": {label: (sets[pair[0]], sets[pair[1]])},
            "setting": f"{table.model.iloc[0]}, {n} images of {dataset}, {n_timesteps} timesteps",
            "ours": "Accuracy: " + ", ".join(f"{s} {a:.1%}" for s, a in zip(table.setting, table.accuracy)) + "."}
