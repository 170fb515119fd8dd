"""The user-facing entry point: ``DiffusionClassifier.from_pretrained(...).classify(image, ...)``."""
from __future__ import annotations

import hashlib
import time
from typing import Sequence

import numpy as np
import torch
from tqdm import tqdm

from .adapters import DiffusionAdapter, load_adapter
from .decide import Classification, decide
from .images import ImageInput
from .noise import NoiseDistribution, make_noise
from .plan import Plan
from .prompts import DEFAULT_TEMPLATE, Conditionings, resolve_conditionings
from .settings import ClassifySettings
from .scoring import ScoreOptions, Scorer, ScoreResult


def image_key(pixels: torch.Tensor) -> str:
    """A content hash of the prepared pixels: the default image id for noise keying."""
    return hashlib.blake2b(pixels.detach().cpu().float().numpy().tobytes(), digest_size=8).hexdigest()


class DiffusionClassifier:
    """Turns a conditional diffusion model into a classifier (Li et al., ICCV 2023).

    >>> clf = DiffusionClassifier.from_pretrained("stabilityai/stable-diffusion-2-base", torch_dtype="float16")
    >>> result = clf.classify("dog.jpg", prompts=["a photo of a dog", "a photo of a cat"], schedule="5,1:25,250")
    >>> result.prediction_name
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
    def classify(self, image: ImageInput | torch.Tensor, prompts=None, class_labels=None,
                 settings: ClassifySettings | None = None, *, image_id: str | int | None = None,
                 temperature: float = 1.0, progress: bool = False, **options) -> Classification:
        """Classify one image.

        Args:
            prompts: for text models, a list of prompts, a prompt file (official CSV or one prompt a line)
                or a :class:`Conditionings`; for class-conditional models, optional class labels.
            class_labels: class indices or names for class-conditional models (default: all classes).
            settings: a :class:`ClassifySettings`; ``options`` are any of its fields, given on their own or put
                over ``settings``: ``schedule`` (``N``: Algorithm 1 with N evenly spaced timesteps; ``"KEEP,...:
                TRIALS,..."``: Algorithm 2; ``"paired:N"``: statistical pruning), ``n_trials`` (noises per
                timestep), ``seed``, ``loss``, ``objective``, ``guidance``, ``crop``, ``noise``, ``batch_size``.
            image_id: keys the noise with the seed; the default is a hash of the image's pixels.
            temperature: of the posterior softmax(-error / temperature).

        Raises :class:`dclib.errors.NonFiniteError` instead of predicting when an error is NaN or inf.
        """
        started = time.perf_counter()
        conds = self.conditionings(prompts, class_labels)
        settings = ClassifySettings.resolve(settings, **options)
        sched, dist = settings.parsed_schedule, settings.noise_distribution
        x0, content_id = self.encode_image(image)
        image_id = content_id if image_id is None else image_id
        seed = settings.seed
        bar = tqdm(total=sched.max_evaluations(len(conds)), desc="classify", unit="eval", leave=False,
                   disable=not progress)
        scorer = Scorer(self.adapter, settings.score_options, batch_size=settings.batch_size, progress=bar)
        encoded = self.adapter.encode_conditions(list(conds.values))
        unconditional = [0]

        def score(indices: list[int], plan: Plan) -> np.ndarray:
            # every conditioning (a first stage) is scored from the encoded tensor itself, not a gathered copy
            rows = encoded if list(indices) == list(range(len(encoded))) else encoded[indices]
            result = scorer.score_plan(x0, rows, plan, seed, image_id, dist)
            unconditional[0] += result.evaluations - len(indices) * len(plan)
            return result.errors.numpy().astype(np.float64)

        result = decide(score, conds, sched, self.adapter.num_train_timesteps, temperature)
        bar.close()
        result.evaluations += unconditional[0]
        result.seconds = time.perf_counter() - started
        result.image_id, result.settings = str(image_id), settings.to_dict()
        return result

    def classify_batch(self, images: Sequence, **kwargs) -> list[Classification]:
        return [self.classify(image, **kwargs) for image in images]
