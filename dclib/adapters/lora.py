"""LoRA weights on top of a loaded pipeline, through diffusers' own loader, from safetensors files only.

``load_lora(pipe, lora)`` calls ``pipe.load_lora_weights`` (SD, SDXL, SD3, FLUX pipelines), which puts the
LoRA layers into the denoiser, and into the text encoders where the file has weights for them, exactly as the
pipeline does before sampling. Pickled weights (.bin, .pt, ...) can run code when loaded, so they are refused
as the base model's are. The returned identity (a local file's sha256, or the hub id and the cached commit) is
what the adapter reports in ``describe()`` beside the base model.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

from ..errors import InputError, ModelNotFoundError

#: The name diffusers' ``save_lora_weights`` gives the file, preferred when a folder holds several.
LORA_FILE = "pytorch_lora_weights.safetensors"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def resolve_lora(lora: str | os.PathLike) -> tuple[str, str | None, dict]:
    """(what ``load_lora_weights`` is given, its ``weight_name``, the LoRA's identity) for a .safetensors
    file, a folder holding one (diffusers' ``pytorch_lora_weights.safetensors`` if there are several), a hub id
    ``owner/name`` or a file in a hub repository ``owner/name/path/file.safetensors``. Cheap (nothing is read),
    so a bad argument fails before the model is loaded."""
    spec = os.fspath(lora)
    if spec.lower().endswith(PICKLE_SUFFIXES):
        raise InputError(f"LoRA {spec!r}: only .safetensors weights are loaded (pickled weights can run code)")
    if os.path.isfile(spec):
        path = Path(spec).resolve()
        if path.suffix != ".safetensors":
            raise InputError(f"LoRA {spec!r} is not a .safetensors file")
        return str(path.parent), path.name, {"lora": spec, "source": "local", "path": str(path)}
    if os.path.isdir(spec):
        files = sorted(p.name for p in Path(spec).glob("*.safetensors"))
        if LORA_FILE in files:
            files = [LORA_FILE]
        if not files:
            raise ModelNotFoundError(f"LoRA folder {spec} holds no .safetensors file (pickled .bin / .pt weights "
                                     "are refused)")
        if len(files) > 1:
            raise ModelNotFoundError(f"LoRA folder {spec} holds several .safetensors files ({', '.join(files)}): "
                                     "pass the file itself")
        source, weight_name, identity = resolve_lora(Path(spec) / files[0])
        return source, weight_name, {**identity, "lora": spec}
    parts = spec.split("/")
    if len(parts) < 2 or spec.startswith(("/", ".")) or "" in parts or (len(parts) == 2 and "." in parts[1]
                                                                           and spec.endswith(".safetensors")):
        raise ModelNotFoundError(f"LoRA {spec!r} is neither a local file or folder nor a hub id (owner/name)")
    weight_name = "/".join(parts[2:]) or None
    if weight_name is not None and not weight_name.endswith(".safetensors"):
        raise InputError(f"LoRA {spec!r}: only .safetensors weights are loaded")
    repo = "/".join(parts[:2])
    return repo, weight_name, {"lora": spec, "source": "hub", "hub_id": repo, "weight_name": weight_name}


def load_lora(pipe, lora: str | os.PathLike) -> dict:
    """Load a LoRA into ``pipe`` with ``pipe.load_lora_weights(..., use_safetensors=True)``; its identity."""
    if not hasattr(pipe, "load_lora_weights"):
        raise InputError(f"{type(pipe).__name__} does not take LoRA weights")
    from diffusers.utils import USE_PEFT_BACKEND

    if not USE_PEFT_BACKEND:
        raise InputError("loading LoRA weights needs the peft package (pip install peft)")
    source, weight_name, identity = resolve_lora(lora)
    before = _loaded_adapters(pipe)
    try:
        # use_safetensors=True also turns off diffusers' fallback to pickled files when no safetensors is found
        pipe.load_lora_weights(source, weight_name=weight_name, use_safetensors=True)
    except (OSError, ValueError) as err:  # missing file, offline without the file named, bad format
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        hint = " (offline, a hub LoRA needs its file named: owner/name/FILE.safetensors)" \
            if "offline" in first.lower() else ""
        raise ModelNotFoundError(f"cannot load LoRA {os.fspath(lora)!r}: {first}{hint}") from None
    except RuntimeError as err:  # shapes that do not fit: a LoRA trained for another model
        detail = " ".join(line.strip() for line in str(err).splitlines()[:2])
        raise InputError(f"LoRA {os.fspath(lora)!r} does not fit this {type(pipe).__name__}: {detail}") from None
    added = {component: sorted(set(names) - set(before.get(component, []))) for component, names in
             _loaded_adapters(pipe).items()}
    added = {component: names for component, names in added.items() if names}
    if not added:  # diffusers only warns when no key matches a component of this pipeline
        raise InputError(f"LoRA {os.fspath(lora)!r} has no weights for any component of this "
                         f"{type(pipe).__name__}")
    if identity["source"] == "local":
        identity["sha256"] = sha256_file(identity["path"])
    elif weight_name:
        identity["commit"] = _hub_commit(source, weight_name)
    return {**identity, "components": sorted(added)}


def _loaded_adapters(pipe) -> dict[str, list[str]]:
    return {k: list(v) for k, v in pipe.get_list_adapters().items()}


def _hub_commit(repo: str, filename: str) -> str | None:
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(repo, filename)  # .../snapshots/COMMIT/path/in/repo
        parts = Path(cached).parts if isinstance(cached, str) else ()
        return parts[parts.index("snapshots") + 1] if "snapshots" in parts else None
    except Exception:
        return None
