"""Diffusion Classifier as a transformers pipeline, task ``"diffusion-classifier"``, called as transformers'
zero-shot-image-classification pipeline is (so code written for CLIP carries over)::

    import transformers
    import dclib.hf_pipeline  # registers the task (or call dclib.hf_pipeline.register_pipeline())
    from dclib import DiffusionClassifier

    pipe = transformers.pipeline("diffusion-classifier", model=DiffusionClassifier.from_pretrained("embedded:digits"))
    pipe(image, candidate_labels=["3", "8"], schedule="5,1:25,250")   # [{"label": "3", "score": 0.9}, ...]
    pipe([image1, image2], candidate_labels=["cat", "dog"], hypothesis_template="a photo of a {}.")  # one list each

    pipe = dclib.hf_pipeline.pipeline("embedded:digits")   # a model id, folder or embedded:NAME (see below)

``candidate_labels`` and ``hypothesis_template`` mean what ``DiffusionClassifier.classify`` makes of them (class
names filled into the template for a text model; class names or indices for a class-conditional one, which takes
no template); the other keyword arguments (``schedule``, ``n_trials``, ``seed``, ``temperature``, ...) go to
``classify`` as they are. A score is the class's ``Classification.probabilities``, a label its class name.

Why a model object: ``transformers.pipeline`` reads a transformers config from a string ``model`` before any
pipeline code runs, and a diffusers folder or ``embedded:NAME`` has none. So a string is loaded into a
``DiffusionClassifier`` first: by :func:`pipeline` here, or by ``DiffusionClassifierPipeline(model=...)`` itself.

This module imports transformers' pipelines (seconds): ``import dclib`` does not import it, it is imported on
demand.
"""
from __future__ import annotations

import torch
import transformers
from transformers.pipelines import PIPELINE_REGISTRY, Pipeline

from .classifier import DiffusionClassifier
from .errors import InputError

TASK = "diffusion-classifier"


class DiffusionClassifierPipeline(Pipeline):
    """``pipe(image_or_images, candidate_labels=..., hypothesis_template=..., **classify_options)``: for one image
    ``[{"label": ..., "score": ...}, ...]`` from the best class down, for a list one such list per image.

    ``model`` is a :class:`DiffusionClassifier` or anything ``DiffusionClassifier.from_pretrained`` takes (loaded
    with its defaults on ``device``). The pipeline runs where the classifier's model lives: a ``device`` that
    differs from a given classifier's is refused, since an adapter is placed once, at loading.
    """

    # a diffusion model brings its own preprocessing: transformers loads no tokenizer or processor for it
    _load_processor = False
    _load_image_processor = False
    _load_video_processor = False
    _load_feature_extractor = False
    _load_tokenizer = False

    def __init__(self, model, device=None, **kwargs):
        model = _classifier(model, device)
        if device is not None and not _same_device(_as_device(device), model.device):
            raise InputError(f"this classifier runs on {model.device}, not {device}: load it there with "
                             f"DiffusionClassifier.from_pretrained(..., device=...)")
        super().__init__(model=model, device=model.device, **_classify_batch_size(kwargs))

    def __repr__(self):  # transformers' own repr asks the model for input modalities, which it has not
        a = self.model.adapter
        return f"{type(self).__name__}(model={a.model_id!r}, adapter={type(a).__name__}, device={self.device})"

    def _sanitize_parameters(self, **kwargs):
        """Everything is the classifier's: the call's keywords reach ``classify`` whole."""
        if CLASSIFY_BATCH_SIZE in kwargs:
            kwargs["batch_size"] = kwargs.pop(CLASSIFY_BATCH_SIZE)
        return {}, kwargs, {}

    def preprocess(self, image, **_):
        # the classifier reads and prepares the image itself (path, PIL, array): kept as given for _forward
        return {"image": image}

    def _forward(self, model_inputs, **classify_options):
        return {"classification": self.model.classify(model_inputs["image"], **classify_options)}

    def postprocess(self, model_outputs, **_):
        result = model_outputs["classification"]
        probabilities, names = result.probabilities, result.conditionings.class_names
        # ranking() lists the candidate classes only; a stable sort keeps its order between equal scores
        ranked = sorted(result.ranking(), key=lambda k: -probabilities[k])
        return [{"label": names[k], "score": float(probabilities[k])} for k in ranked]

    def __call__(self, images, **kwargs):
        """One image (path, PIL, array) or a list or tuple of them; ``kwargs`` go to ``classify``."""
        images = list(images) if isinstance(images, tuple) else images
        return super().__call__(images, **_classify_batch_size(kwargs))


#: transformers' own ``batch_size`` stacks images through a DataLoader (a collate a diffusion classifier has no
#: use for: it batches each image's denoiser calls itself); here ``batch_size`` is ``classify``'s, carried past
#: transformers under this name.
CLASSIFY_BATCH_SIZE = "_classify_batch_size"


def _classify_batch_size(kwargs: dict) -> dict:
    return {(CLASSIFY_BATCH_SIZE if k == "batch_size" else k): v for k, v in kwargs.items()}


def _as_device(device) -> torch.device:
    """A transformers ``device`` (ordinal, string or torch.device) as a torch.device."""
    if isinstance(device, int):
        return torch.device("cpu") if device < 0 else torch.device("cuda", device)
    return torch.device(device)


def _same_device(a: torch.device, b: torch.device) -> bool:
    """``cuda`` and ``cuda:0`` name one device when the index is left open."""
    return a.type == b.type and (a.index is None or b.index is None or a.index == b.index)


def _classifier(model, device=None) -> DiffusionClassifier:
    """``model`` itself, or the classifier ``DiffusionClassifier.from_pretrained`` loads from it on ``device``."""
    if isinstance(model, DiffusionClassifier):
        return model
    return DiffusionClassifier.from_pretrained(model, device=None if device is None else _as_device(device))


def register_pipeline() -> None:
    """Make ``transformers.pipeline("diffusion-classifier", ...)`` build a :class:`DiffusionClassifierPipeline`
    (done on importing this module; calling it again changes nothing)."""
    if PIPELINE_REGISTRY.supported_tasks.get(TASK, {}).get("impl") is DiffusionClassifierPipeline:
        return  # registering twice makes transformers warn that it overwrites the task
    PIPELINE_REGISTRY.register_pipeline(TASK, pipeline_class=DiffusionClassifierPipeline,
                                        pt_model=DiffusionClassifier, type="image")


def pipeline(model, device=None, **kwargs) -> DiffusionClassifierPipeline:
    """``transformers.pipeline("diffusion-classifier", model=...)`` for a ``model`` string too (a hub id, a
    diffusers folder, ``embedded:NAME``), loaded with ``DiffusionClassifier.from_pretrained`` first; ``kwargs``
    go to ``transformers.pipeline`` (and from there to the pipeline: default ``classify`` options)."""
    register_pipeline()
    return transformers.pipeline(TASK, model=_classifier(model, device), device=device, **kwargs)


register_pipeline()
