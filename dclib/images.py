"""Reading images from disk and preparing them exactly as the official evaluations do.

Stable Diffusion and pixel models (Appendix F.1, the official ``eval_prob_adaptive.py``): resize so the shortest
edge equals the model resolution with bicubic interpolation, center crop (:func:`resize_center_crop`). DiT (the
official ``eval_prob_dit.py``, ADM's ``center_crop_arr``): box halvings first, then the same
(:func:`adm_center_crop`). Pixel values map to [-1, 1]. Alpha is composited onto white, palette and grayscale
images are converted.
"""
from __future__ import annotations

import os
from typing import Union

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from .errors import InputError

ImageInput = Union[str, os.PathLike, Image.Image, np.ndarray]


def load_image(source: ImageInput) -> Image.Image:
    """Open and fully decode an image; return it in mode ``RGB`` or ``L``.

    Raises :class:`InputError` with a one-line reason for a missing, unreadable, truncated or non-image file.
    """
    if isinstance(source, Image.Image):
        image = source
    elif isinstance(source, np.ndarray):
        array = source
        if array.dtype != np.uint8:
            raise InputError(f"numpy images must be uint8 (got {array.dtype})")
        image = Image.fromarray(array)
    else:
        path = os.fspath(source)
        if not os.path.exists(path):
            raise InputError(f"image not found: {path}")
        if os.path.isdir(path):
            raise InputError(f"expected an image file, got a folder: {path}")
        try:
            with Image.open(path) as opened:
                opened.load()  # decode now, so truncated files fail here and not later
                image = opened.copy()
        except UnidentifiedImageError:
            raise InputError(f"not an image (unrecognised format): {path}") from None
        except (OSError, SyntaxError, ValueError) as err:
            raise InputError(f"unreadable image {path}: {err}") from None
    return normalize_mode(image)


def normalize_mode(image: Image.Image) -> Image.Image:
    """Palette, alpha, 16-bit and CMYK images become RGB (alpha over white); grayscale stays L."""
    if image.mode == "P":
        image = image.convert("RGBA") if "transparency" in image.info else image.convert("RGB")
    if image.mode in ("LA", "RGBA", "PA"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba).convert("RGB")
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        array = np.asarray(image, dtype=np.float64)
        top = array.max() or 1.0
        image = Image.fromarray((array / top * 255.0).round().astype(np.uint8), mode="L")
    if image.mode == "1":
        image = image.convert("L")
    if image.mode not in ("RGB", "L"):
        image = image.convert("RGB")
    return image


def resize_center_crop(image: Image.Image, size: int, resample=Image.Resampling.BICUBIC) -> Image.Image:
    """Resize the shortest edge to ``size`` then take the central ``size x size`` crop.

    Matches torchvision's ``Resize(size, BICUBIC)`` + ``CenterCrop(size)`` used by the official code.
    """
    width, height = image.size
    if (width, height) != (size, size):
        if width <= height:
            new_w, new_h = size, int(size * height / width)
        else:
            new_w, new_h = int(size * width / height), size
        if (new_w, new_h) != (width, height):
            image = image.resize((new_w, new_h), resample=resample)
        width, height = image.size
        top = int(round((height - size) / 2.0))
        left = int(round((width - size) / 2.0))
        image = image.crop((left, top, left + size, top + size))
    return image


def adm_center_crop(image: Image.Image, size: int) -> Image.Image:
    """ADM's ``center_crop_arr``, which DiT's training and the official DiT evaluation use.

    Halve both sides with a BOX filter while the shortest is at least ``2 * size`` (an exact average of 2x2
    pixels), then resize bicubically so the shortest side is ``size`` (each side rounded, not truncated as in
    :func:`resize_center_crop`), then crop the centre with offsets rounded down.
    """
    while min(image.size) >= 2 * size:
        image = image.resize(tuple(side // 2 for side in image.size), resample=Image.Resampling.BOX)
    scale = size / min(image.size)
    image = image.resize(tuple(round(side * scale) for side in image.size), resample=Image.Resampling.BICUBIC)
    left, top = (image.width - size) // 2, (image.height - size) // 2
    return image.crop((left, top, left + size, top + size))


def to_tensor(image: Image.Image, channels: int) -> torch.Tensor:
    """PIL image -> float tensor [channels, H, W] in [-1, 1]: bit for bit torchvision's ``ToTensor()`` then
    ``Normalize(0.5, 0.5)``, as both official evaluations do (x / 127.5 - 1 and (x / 255 - 0.5) / 0.5 agree on
    every uint8 value in float32)."""
    image = image.convert("L" if channels == 1 else "RGB")
    array = np.asarray(image, dtype=np.float32) / 127.5 - 1.0
    if array.ndim == 2:
        array = array[None]
    else:
        array = array.transpose(2, 0, 1)
    return torch.from_numpy(np.ascontiguousarray(array))


def preprocess(image: ImageInput, size: int, channels: int = 3, crop=resize_center_crop) -> torch.Tensor:
    """Load, resize and center crop (``crop``: :func:`resize_center_crop` or :func:`adm_center_crop`) and scale
    to [-1, 1]: tensor [C, size, size]."""
    return to_tensor(crop(load_image(image), size), channels)
