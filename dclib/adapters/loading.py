"""Resolve a model id (hub id, local folder or ``embedded:NAME``) and load it behind the right adapter."""
from __future__ import annotations

import contextlib
import json
import os
import warnings
from pathlib import Path

import torch

from ..errors import InputError, ModelNotFoundError
from ..hub import unreachable_reason
from .base import DiffusionAdapter, check_compile_mode
from .dit import DiTAdapter
from .flow_matching import StableDiffusion3Adapter
from .flux import FluxAdapter
from .lora import load_lora, resolve_lora
from .pixel_unet import PixelUNetAdapter
from .sdxl import StableDiffusionXLAdapter
from .stable_diffusion import StableDiffusionAdapter

#: model_index.json ``_class_name`` -> adapter class.
ADAPTERS = {
    "StableDiffusionPipeline": StableDiffusionAdapter,
    "StableDiffusionXLPipeline": StableDiffusionXLAdapter,
    "StableDiffusion3Pipeline": StableDiffusion3Adapter,  # flow matching (SD3, SD3.5)
    "FluxPipeline": FluxAdapter,  # flow matching on packed latents (FLUX.1 dev, schnell)
    "DiTPipeline": DiTAdapter,
    "DDPMPipeline": PixelUNetAdapter,
}

DTYPES = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16, "fp16": torch.float16,
          "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}

EMBEDDED_DIR = Path(__file__).resolve().parent.parent / "models"


def resolve_dtype(dtype) -> torch.dtype:
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    try:
        return DTYPES[str(dtype).replace("torch.", "")]
    except KeyError:
        raise InputError(f"unknown dtype {dtype!r}: use one of {', '.join(DTYPES)}") from None


def resolve_autocast(autocast, device: torch.device, dtype: torch.dtype) -> torch.dtype | None:
    """The denoiser's autocast dtype. ``None``/``"auto"``: on CUDA with float32 weights, bf16 (fp16 where the
    GPU lacks bf16), the fast path as fp16 is in the official evaluation. On CPU off: bf16 is fast only with
    native bf16 instructions and shifts every error by bf16 rounding (opt in with ``autocast="bfloat16"``).
    ``"none"`` turns it off everywhere."""
    if autocast in ("none", "", False):
        return None
    if autocast in (None, "auto"):
        if device.type == "cuda" and dtype == torch.float32:
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return None
    return resolve_dtype(autocast)


def resolve_device(device) -> torch.device:
    """``auto`` (or None): CUDA when there is a GPU, else the CPU. A device this machine lacks is one line here,
    not a traceback from the first tensor moved to it."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise InputError(f"unknown device {device!r}: use cpu, cuda, cuda:N, mps or auto") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(f"device {device!r}: CUDA is not available here (torch {torch.__version__}"
                             f"{', built without CUDA' if torch.version.cuda is None else ', no GPU found'}); "
                             "use --device cpu or auto")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise InputError(f"device {device!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise InputError(f"device {device!r}: MPS is not available here; use --device cpu or auto")
    return dev


#: Other names of embedded models: the zero-shot benchmark's text-to-image model is embedded:shapes.
EMBEDDED_ALIASES = {"zeroshot": "shapes"}


def resolve_model_path(model: str) -> str:
    """``embedded:NAME`` -> the folder shipped inside dclib; anything else is returned as is."""
    model = os.fspath(model)
    if model.startswith("embedded:"):
        name = model.split(":", 1)[1]
        head, sep, rest = name.partition("/")  # embedded:zeroshot/checkpoints/step-01000 is a checkpoint too
        name = EMBEDDED_ALIASES.get(head, head) + sep + rest
        path = EMBEDDED_DIR / name
        if not (path / "model_index.json").exists():
            available = sorted(p.name for p in EMBEDDED_DIR.glob("*") if (p / "model_index.json").exists()) \
                if EMBEDDED_DIR.exists() else []
            available += sorted(EMBEDDED_ALIASES)
            raise ModelNotFoundError(f"no embedded model {name!r}; available: {', '.join(available) or 'none'}")
        return str(path)
    return model


def card_calibration(path: str) -> dict | None:
    """The temperature a local model folder's card (``training.json``, written by ``dclib train``) carries, with
    what it was fitted on; None for a hub model or a card without one."""
    card = Path(path) / "training.json"
    if not card.is_file():
        return None
    try:
        return json.loads(card.read_text()).get("calibration")
    except ValueError:
        return None


def read_model_index(model: str, revision: str | None = None) -> dict:
    """The pipeline's model_index.json, from a local folder or the hub (cache only when offline)."""
    if os.path.isdir(model):
        index = Path(model) / "model_index.json"
        if not index.exists():
            raise ModelNotFoundError(f"{model} is a folder but has no model_index.json: save a diffusers "
                                     "pipeline there with save_pretrained")
        return json.loads(index.read_text())
    if os.path.exists(model):
        raise ModelNotFoundError(f"{model} is a file; pass a diffusers pipeline folder or a hub id")
    if model.count("/") != 1 or model.startswith(("/", ".")):
        raise ModelNotFoundError(f"model {model!r} is neither a local folder nor a hub id (owner/name)")
    reason = unreachable_reason(model, "model")
    if reason:  # at once, not after half a minute of retries
        raise ModelNotFoundError(f"cannot load model {model!r}: there is no local folder of that name, and {reason}")
    from huggingface_hub import hf_hub_download
    try:
        path = hf_hub_download(model, "model_index.json", revision=revision)
    except Exception as err:  # offline + not cached, unknown repo, gated repo, no network ...
        offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")
        hint = ("it is not in the local Hugging Face cache and HF_HUB_OFFLINE is set" if offline
                else f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}")
        raise ModelNotFoundError(f"cannot load model {model!r}: {hint}") from None
    return json.loads(Path(path).read_text())


def _version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.split(".")[:2] if p.isdigit())


@contextlib.contextmanager
def quiet_hf_logging():
    """Silence diffusers/transformers info, warnings and loading bars while loading; restore afterwards."""
    from diffusers.utils import logging as dlog
    from transformers.utils import logging as tlog

    levels = dlog.get_verbosity(), tlog.get_verbosity()
    bars = dlog.is_progress_bar_enabled(), tlog.is_progress_bar_enabled()
    dlog.set_verbosity_error(), tlog.set_verbosity_error()
    dlog.disable_progress_bar(), tlog.disable_progress_bar()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            yield
    finally:
        dlog.set_verbosity(levels[0]), tlog.set_verbosity(levels[1])
        if bars[0]:
            dlog.enable_progress_bar()
        if bars[1]:
            tlog.enable_progress_bar()


def load_adapter(model: str, torch_dtype=None, device=None, resolution: int | None = None,
                 revision: str | None = None, autocast=None, compile: bool | str = False,
                 lora: str | os.PathLike | None = None) -> DiffusionAdapter:
    """Load a diffusers pipeline with ``from_pretrained`` (safetensors only) behind its adapter.

    ``lora`` (a .safetensors file, a folder holding one, or a hub id) is loaded into the pipeline with its own
    ``load_lora_weights`` before the adapter is built (see ``lora.load_lora``).
    ``compile=True`` (or a torch.compile mode such as "reduce-overhead" for CUDA graphs) wraps the denoiser in
    ``torch.compile`` (static batch shapes; worth it for long runs)."""
    compile_mode = check_compile_mode(compile) if compile else None  # a typo fails before any loading
    if lora is not None:
        resolve_lora(lora)  # so does a missing or pickled LoRA file
    dtype, dev = resolve_dtype(torch_dtype), resolve_device(device)  # a typo or a missing GPU fails first
    path = resolve_model_path(model)
    index = read_model_index(path, revision)
    class_name = index.get("_class_name")
    if class_name not in ADAPTERS:
        raise ModelNotFoundError(f"model {model!r} is a {class_name}; dclib supports "
                                 f"{', '.join(sorted(ADAPTERS))}")
    import diffusers

    with quiet_hf_logging():  # the lazy import of a pipeline class imports transformers' processors (warnings)
        pipeline_cls = getattr(diffusers, class_name)
    # diffusers renamed torch_dtype to dtype in 0.36; older releases only know torch_dtype.
    dtype_key = "dtype" if _version_tuple(diffusers.__version__) >= (0, 36) else "torch_dtype"
    kwargs = {"use_safetensors": True, "revision": revision, dtype_key: dtype}
    if class_name == "StableDiffusionPipeline":
        kwargs.update(safety_checker=None, requires_safety_checker=False)
    try:
        with quiet_hf_logging():
            pipe = pipeline_cls.from_pretrained(path, **kwargs)
    except (OSError, EnvironmentError, ValueError) as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ModelNotFoundError(f"cannot load model {model!r}: {first}") from None
    lora_identity = None
    if lora is not None:
        with quiet_hf_logging():
            lora_identity = load_lora(pipe, lora)
    adapter = ADAPTERS[class_name](pipe, device=dev, dtype=dtype, resolution=resolution,
                                   id2label=index.get("id2label"))
    adapter.model_id = model
    adapter.lora = lora_identity
    adapter.card_calibration = card_calibration(path) if lora is None else None  # LoRA weights change the scale
    adapter.autocast = resolve_autocast(autocast, dev, dtype)
    if compile_mode:
        adapter.compile(compile_mode)
    return adapter
