"""The user-facing entry point: ``DiffusionClassifier.from_pretrained(...).classify(image, ...)``.

``classify`` speaks the Hugging Face zero-shot habits too: a list of images gives a list of results, and
``candidate_labels`` with ``hypothesis_template`` name the candidates as transformers' zero-shot-image-classification
pipeline does (``dclib.hf_pipeline`` wraps it as a transformers pipeline).
"""
from __future__ import annotations

import hashlib
import time
from typing import Sequence

import numpy as np
import torch
from tqdm import tqdm

from .adapters import DiffusionAdapter, load_adapter
from .decide import Classification, decide
from .errors import InputError
from .images import ImageInput
from .label_tree import resolve_settings
from .noise import NoiseDistribution, make_noise
from .plan import Plan
from .prompts import DEFAULT_TEMPLATE, Conditionings, require_candidates, resolve_conditionings
from .settings import ClassifySettings
from .scoring import ScoreOptions, Scorer, ScoreResult, noise_elements


#: What a probability is when no temperature and no card temperature apply: the paper's posterior as printed.
EQ6 = "uncalibrated (eq. 6)"
#: The settings that set the scale of the errors, so a card temperature holds only where they match its fit.
SCALE_KEYS = ("loss", "objective", "guidance", "crop", "noise")


def image_key(pixels: torch.Tensor) -> str:
    """A content hash of the prepared pixels: the default image id for noise keying."""
    return hashlib.blake2b(pixels.detach().cpu().float().numpy().tobytes(), digest_size=8).hexdigest()


class DiffusionClassifier:
    """Turns a conditional diffusion model into a classifier (Li et al., ICCV 2023).

    >>> clf = DiffusionClassifier.from_pretrained("stabilityai/stable-diffusion-2-base", torch_dtype="float16")
    >>> result = clf.classify("dog.jpg", prompts=["a photo of a dog", "a photo of a cat"], schedule="5,1:25,250")
    >>> result.prediction_name
    >>> clf.classify(["dog.jpg", "cat.jpg"], candidate_labels=["dog", "cat"], hypothesis_template="a photo of a {}.")
    """

    def __init__(self, adapter: DiffusionAdapter):
        self.adapter = adapter

    @classmethod
    def from_pretrained(cls, model: str, torch_dtype=None, device=None, resolution: int | None = None,
                        revision: str | None = None, autocast=None, compile: bool | str = False,
                        lora: str | None = None) -> "DiffusionClassifier":
        """Load a hub id, a local diffusers folder or ``embedded:NAME`` (safetensors only).

        ``autocast="bfloat16"`` runs the denoiser under mixed precision (errors are still computed in float32).
        The default (``None``, "auto") does so on CUDA with float32 weights and not on CPU (where bf16 is fast
        only with native bf16 instructions); ``autocast="none"`` turns it off.
        ``compile=True`` compiles the denoiser with ``torch.compile`` (slow first call, faster long runs);
        ``compile="reduce-overhead"`` also replays it as CUDA graphs on a GPU (see ``DiffusionAdapter.compile``).
        ``lora`` loads LoRA weights (a .safetensors file, a folder holding one, or a hub id) into the model with
        the pipeline's own ``load_lora_weights``; ``adapter.describe()["lora"]`` records which.
        """
        return cls(load_adapter(model, torch_dtype=torch_dtype, device=device, resolution=resolution,
                                revision=revision, autocast=autocast, compile=compile, lora=lora))

    # ------------------------------------------------------------------------------------------ helpers
    def conditionings(self, prompts=None, class_labels=None, dataset=None, label_names: Sequence[str] | None = None,
                      template: str = DEFAULT_TEMPLATE) -> Conditionings:
        """The candidates: prompts (a list, a prompt CSV) for a text model, class labels (default all) for a
        class-conditional one. Without either, a text model takes the prompt CSV ``dataset`` carries
        (``embedded:zeroshot-test`` does), else one prompt per class of the dataset: ``template`` filled with
        each of ``label_names`` (the dataset's own class names)."""
        a = self.adapter
        if prompts is None and class_labels is None and a.text_conditioned:
            from .data import embedded_prompt_file  # local: dclib.data loads `datasets`, which `import dclib` skips

            prompts = embedded_prompt_file(dataset) if dataset is not None else None
            if prompts is None and label_names:
                return Conditionings.from_class_names(label_names, template)
        return resolve_conditionings(prompts, class_labels, a.class_names, a.text_conditioned)

    def candidates(self, prompts=None, class_labels=None, candidate_labels=None,
                   hypothesis_template: str | None = None) -> Conditionings:
        """What ``classify`` compares: :meth:`conditionings` of ``prompts`` / ``class_labels``, or
        ``candidate_labels`` as transformers' zero-shot pipelines name them (so code written for CLIP carries
        over). For a text model they are class names, each filled into ``hypothesis_template`` (default
        ``"a photo of a {}."``) as one prompt, the class keeping the name as given; for a class-conditional model
        they are class names or indices of the model's classes, as ``class_labels``. A string is read as
        comma-separated names, as the CLI's ``--labels`` is."""
        if candidate_labels is None:
            if hypothesis_template is not None:
                raise InputError("hypothesis_template is filled with candidate_labels: pass candidate_labels too")
            return require_candidates(self.conditionings(prompts, class_labels))
        if prompts is not None or class_labels is not None:
            raise InputError("pass candidate_labels or prompts/class_labels, not both")
        if isinstance(candidate_labels, str):
            candidate_labels = [v.strip() for v in candidate_labels.split(",") if v.strip()]
        labels = list(candidate_labels)
        if self.adapter.text_conditioned:
            template = DEFAULT_TEMPLATE if hypothesis_template is None else hypothesis_template
            return require_candidates(Conditionings.from_class_names(labels, template))
        if hypothesis_template is not None:
            raise InputError("this model is class-conditional: its candidate_labels are class names or indices, "
                             "and it takes no hypothesis_template")
        return require_candidates(self.conditionings(class_labels=labels))

    @property
    def device(self) -> torch.device:
        """Where the model runs (chosen at loading: ``from_pretrained(..., device=...)``)."""
        return self.adapter.device

    def encode_image(self, image: ImageInput | torch.Tensor) -> tuple[torch.Tensor, str]:
        """One image (path, PIL, uint8 array, or pixels [C, R, R] in [-1, 1]) -> (x0, content id)."""
        pixels = image if isinstance(image, torch.Tensor) else self.adapter.preprocess(image)
        return self.adapter.encode_images(pixels[None])[0].cpu(), image_key(pixels)

    def score(self, x0: torch.Tensor, conditionings: Conditionings, plan: Plan | None = None, *,
              timesteps: torch.Tensor | None = None, noise: torch.Tensor | None = None, seed: int = 0,
              image_id: str | int = 0, noise_distribution: str | NoiseDistribution | None = None,
              options: ScoreOptions | None = None, batch_size: "int | str" = "auto", return_maps: bool = False,
              progress: bool = False) -> ScoreResult:
        """Low level: errors [n_conditionings, n_samples] for a plan, or for explicit timesteps and noise."""
        scorer = Scorer(self.adapter, options, batch_size=batch_size, progress=progress)
        if timesteps is None:
            if plan is None:
                raise ValueError("pass a plan or explicit timesteps")
            plan.check(self.adapter.num_train_timesteps)
            timesteps = torch.tensor(plan.timesteps, dtype=torch.long)
        if noise is None:
            plan = plan or Plan.from_timesteps(torch.as_tensor(timesteps).tolist())
            noise = make_noise(plan, x0.shape, seed, image_id, noise_distribution)
        cond = self.adapter.encode_conditions(list(conditionings.values))
        return scorer.score(x0, cond, timesteps, noise, return_maps=return_maps)

    # ------------------------------------------------------------------------------------------ classify
    def classify(self, image: ImageInput | torch.Tensor | Sequence, prompts=None, class_labels=None,
                 settings: ClassifySettings | None = None, *, candidate_labels=None,
                 hypothesis_template: str | None = None, image_id=None, temperature: float | None = None,
                 progress: bool = False, **options) -> Classification | list[Classification]:
        """Classify one image, or each image of a list or tuple (a list of results, each the one that image gets
        on its own: the noise is keyed by the image, never by its place in the list).

        Args:
            image: a path, PIL image, uint8 array or pixels [C, R, R] in [-1, 1]; or a list or tuple of them.
            prompts: for text models, a list of prompts, a prompt file (official CSV or one prompt a line)
                or a :class:`Conditionings`; for class-conditional models, optional class labels.
            class_labels: class indices or names for class-conditional models (default: all classes).
            candidate_labels, hypothesis_template: the candidates as transformers' zero-shot pipelines name them,
                instead of prompts / class_labels (see :meth:`candidates`): class names filled into the template
                for a text model; class names or indices for a class-conditional one. At least two.
            settings: a :class:`ClassifySettings`; ``options`` are any of its fields, given on their own or put
                over ``settings``: ``schedule`` (``N``: Algorithm 1 with N evenly spaced timesteps; ``"KEEP,...:
                TRIALS,..."``: Algorithm 2; ``"paired:N"``: statistical pruning; ``"tree:auto"`` or
                ``"tree:GROUPS.json"``: pruning over a label tree, resolved here against the candidates),
                ``n_trials`` (noises per timestep), ``seed``, ``loss``, ``objective``, ``guidance``, ``crop``,
                ``noise``, ``batch_size``.
            image_id: keys the noise with the seed; the default is a hash of the image's pixels. For a list of
                images, a list of ids (one per image) or None.
            temperature: of the posterior softmax(-error / temperature), per element of the error. None (the
                default) is :meth:`default_temperature`: an embedded model's card temperature, else the paper's
                eq. 6. ``Classification.probability_source`` says which.

        Raises :class:`dclib.errors.NonFiniteError` instead of predicting when an error is NaN or inf.
        """
        started = time.perf_counter()
        conds = self.candidates(prompts, class_labels, candidate_labels, hypothesis_template)
        settings = ClassifySettings.resolve(settings, **options)
        settings = resolve_settings(settings, self, conds)  # tree:auto, tree:GROUPS.json
        if isinstance(image, (list, tuple)):  # candidates and settings checked once, before any image
            ids = [None] * len(image) if image_id is None else image_id
            if not isinstance(ids, (list, tuple)) or len(ids) != len(image):
                raise InputError(f"a list of {len(image)} images takes a list of {len(image)} image ids (or none)")
            return [self.classify(one, conds, settings=settings, image_id=key, temperature=temperature,
                                  progress=progress) for one, key in zip(image, ids)]
        sched, dist = settings.parsed_schedule, settings.noise_distribution
        x0, content_id = self.encode_image(image)
        image_id = content_id if image_id is None else image_id
        seed = settings.seed
        bar = tqdm(total=sched.max_evaluations(len(conds)), desc="classify", unit="eval", leave=False,
                   disable=not progress)
        scorer = Scorer(self.adapter, settings.score_options, batch_size=settings.batch_size, progress=bar)
        encoded = self.adapter.encode_conditions(list(conds.values))

        def score(indices: list[int], plan: Plan) -> tuple[np.ndarray, int]:
            # every conditioning (a first stage) is scored from the encoded tensor itself, not a gathered copy
            rows = encoded if list(indices) == list(range(len(encoded))) else encoded[indices]
            result = scorer.score_plan(x0, rows, plan, seed, image_id, dist)
            return result.errors.numpy().astype(np.float64), result.evaluations  # guidance spends more

        if temperature is None:
            temperature, source = self.default_temperature(settings)
        else:
            source = f"temperature {temperature:g} (given)"
        result = decide(score, conds, sched, self.adapter.num_train_timesteps, temperature)
        result.probability_source = source
        bar.close()
        result.seconds = time.perf_counter() - started
        result.image_id, result.settings = str(image_id), settings.to_dict()
        return result

    def default_temperature(self, settings: ClassifySettings | None = None) -> tuple[float, str]:
        """(temperature per error element, what it is) when none is given.

        A model whose card (``training.json``) carries a fitted temperature, as the embedded models' do (fitted on
        their recipe's validation images, which no test or ECE figure uses), gets it when ``settings`` score as it
        was fitted (loss, objective, guidance, crop, noise: they set the error's scale). Any other model gets the
        paper's eq. 6, p(c | x) = softmax(-E_t,eps ||eps - eps_theta(x_t, c)||^2): the squared error summed over
        the d elements of a sample at T = 1, which is ``1 / d`` on dclib's per-element mean errors. Eq. 6 is
        uncalibrated (on Stable Diffusion's 16,384 latent elements it is nearly always certain); a calibration
        file (``dclib calibrate``) overrides both.
        """
        settings = settings or ClassifySettings()
        card = getattr(self.adapter, "card_calibration", None) or {}
        fitted_with = card.get("settings", {})
        if card.get("temperature") and all(fitted_with.get(k) == v for k, v in settings.method_dict().items()
                                           if k in SCALE_KEYS):
            return float(card["temperature"]), f"model card temperature {card['temperature']:.3g} ({card['fitted_on']})"
        return 1.0 / noise_elements(self.adapter, settings.crop), EQ6  # eq. 6's T = 1 on the summed error

    def classify_batch(self, images: Sequence, **kwargs) -> list[Classification]:
        """``classify`` of a list of images (kept for older code: ``classify`` takes a list itself)."""
        return self.classify(list(images), **kwargs)
