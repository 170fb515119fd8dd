"""Distribution-shifted copies of the digit test splits (small analogues of ImageNet-V2/-A/ObjectNet).

Each shift maps a clean uint8 grayscale image to a corrupted one. Randomness comes from a seed derived
from (shift name, image id), so a shifted image is the same in every process and does not depend on the
row's position or on which other images are shifted. Strengths are given for 28x28 images and scaled by
`size / 28` where a pixel length is involved (blur sigma, translation, dilation footprint).

Severities were chosen so a logistic-regression / MLP baseline trained on the clean train split loses
accuracy clearly but stays far above chance (10%); `invert` is the exception by nature (a linear pixel
classifier fails on it), like ObjectNet's shift for ImageNet models.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Callable

import numpy as np
from scipy import ndimage

from dclib.data import digits
from dclib.data.common import ImageSplit, stable_seed

# Gaussian pixel noise, standard deviation in 0..255 units (not scaled: it is per pixel).
NOISE_SIGMA = 70.0
# Gaussian blur sigma in pixels at 28x28 (-> 0.71 px at 8x8).
BLUR_SIGMA_28 = 2.5
# Translation length in pixels at 28x28 (-> 1.14 px at 16x16, 0.57 px at 8x8; sub-pixel moves are
# bilinear, because a whole pixel is already an eighth of an 8x8 digit).
TRANSLATE_PX_28 = 2.0
# Rotation angle magnitude range in degrees; the sign is random.
ROTATE_DEGREES = (15.0, 25.0)
# Side of the square grey-dilation footprint at 28x28 (3 -> 2 at 16x16 and at 8x8).
THICK_SIZE_28 = 3.0


def _scaled_px(length_28: float, size: int) -> int:
    return max(1, int(round(length_28 * size / 28.0)))


def _noise(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return img.astype(np.float64) + rng.normal(0.0, NOISE_SIGMA, img.shape)


def _blur(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    sigma = BLUR_SIGMA_28 * img.shape[0] / 28.0
    return ndimage.gaussian_filter(img.astype(np.float64), sigma=sigma, mode="constant", cval=0.0)


def _translate(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    length = TRANSLATE_PX_28 * img.shape[0] / 28.0
    angle = rng.uniform(0.0, 2.0 * np.pi)
    offset = (length * np.sin(angle), length * np.cos(angle))
    # Zero fill: strokes that leave the frame are lost, as when a photo is framed differently.
    return ndimage.shift(img.astype(np.float64), offset, order=1, mode="constant", cval=0.0)


def _rotate(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    low, high = ROTATE_DEGREES
    angle = rng.uniform(low, high) * rng.choice((-1.0, 1.0))
    return ndimage.rotate(img.astype(np.float64), angle, reshape=False, order=1, mode="constant", cval=0.0)


def _thick(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    size = max(2, _scaled_px(THICK_SIZE_28, img.shape[0]))
    return ndimage.grey_dilation(img, size=(size, size))


def _invert(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return 255 - img.astype(np.int32)


SHIFTS: dict[str, Callable[[np.ndarray, np.random.Generator], np.ndarray]] = {
    "noise": _noise,
    "blur": _blur,
    "translate": _translate,
    "rotate": _rotate,
    "thick": _thick,
    "invert": _invert,
}
SHIFT_NAMES = tuple(SHIFTS)


def shift_image(img: np.ndarray, shift: str, image_id: str) -> np.ndarray:
    """Apply one named shift to one uint8 [h, w] image; deterministic given (shift, image_id)."""
    if shift not in SHIFTS:
        raise ValueError(f"unknown shift {shift!r}; valid: {', '.join(SHIFT_NAMES)}")
    rng = np.random.default_rng(stable_seed("shift", shift, image_id))
    out = SHIFTS[shift](img, rng)
    return np.rint(out).clip(0, 255).astype(np.uint8)


def shift_split(split: ImageSplit, shift: str) -> ImageSplit:
    """A shifted copy of a split: same labels and order, ids suffixed with `-{shift}`."""
    images = np.stack([shift_image(a, shift, i) for a, i in zip(split.images, split.ids)])
    extra = dict(split.extra)
    extra["clean_id"] = list(split.ids)
    return ImageSplit(
        images=images,
        labels=split.labels,
        ids=[f"{i}-{shift}" for i in split.ids],
        class_names=split.class_names,
        extra=extra,
    )


@lru_cache(maxsize=None)
def shifted_test_split(family: str, shift: str) -> ImageSplit:
    """The `shift` version of `family`'s test split (family in digits, mnist, mnist16)."""
    builders = {"digits": digits.digits_split, "mnist": digits.mnist_split, "mnist16": digits.mnist16_split}
    if family not in builders:
        raise ValueError(f"unknown family {family!r}; valid: {', '.join(builders)}")
    return shift_split(builders[family]("test"), shift)
