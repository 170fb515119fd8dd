"""Noise for each sample, keyed by (seed, image id, t, repeat) and independent of everything else.

Each sample's noise comes from its own CPU generator whose seed is a hash of the key, so an image's noise does
not depend on batch size, device, process count, dataset order or the other samples in the plan. The noise is
generated on the CPU in float32 and then moved, which makes it identical on every device.
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Sequence

import torch

from .errors import InputError, check_finite
from .plan import Plan


def sample_seed(seed: int, image_id: str | int, t: int, repeat: int) -> int:
    """A 63-bit generator seed for one sample, stable across Python versions and platforms."""
    key = f"dclib-noise|{int(seed)}|{image_id}|{int(t)}|{int(repeat)}".encode()
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little") & (2**63 - 1)


@dataclass(frozen=True)
class NoiseDistribution:
    """How eps is drawn (Table 12 of the paper).

    - ``normal``: eps ~ N(0, I), the default and the only one that matches training.
    - ``zero``: eps = 0, the mode of N(0, I).
    - ``truncated``: N(0, I) with every element outside [low, high] resampled until it falls inside.
    - ``expected_norm``: N(0, I) rescaled to the expected norm E||eps'||_2 of a d-dimensional standard normal.
    """

    kind: str = "normal"
    low: float = -1.0
    high: float = 1.0

    def __post_init__(self):
        if self.kind not in ("normal", "zero", "truncated", "expected_norm"):
            raise InputError(f"unknown noise distribution {self.kind!r}: use normal, zero, truncated[a,b] "
                             "or expected_norm")
        if self.kind == "truncated":
            low, high = (check_finite("a truncation bound", v) for v in (self.low, self.high))
            if not low < 0 < high:
                raise InputError(f"a truncated normal needs low < 0 < high, got [{self.low}, {self.high}]")

    @classmethod
    def parse(cls, spec: "str | NoiseDistribution | None") -> "NoiseDistribution":
        """``normal``, ``zero``, ``expected_norm``, ``truncated`` (= [-1, 1]) or ``truncated:-2.5,2.5``."""
        if spec is None:
            return cls()
        if isinstance(spec, NoiseDistribution):
            return spec
        text = spec.strip().lower().replace(" ", "")
        if text.startswith("truncated"):
            bounds = text[len("truncated"):].strip(":[]()")
            if not bounds:
                return cls("truncated")
            try:
                low, high = (float(v) for v in bounds.split(","))
            except ValueError:
                raise InputError(f"cannot read noise distribution {spec!r}: use truncated:LOW,HIGH") from None
            return cls("truncated", low, high)
        return cls(text)

    def sample(self, shape: Sequence[int], generator: torch.Generator) -> torch.Tensor:
        if self.kind == "zero":
            return torch.zeros(shape)
        eps = torch.randn(shape, generator=generator)
        if self.kind == "truncated":
            outside = (eps < self.low) | (eps > self.high)
            while outside.any():
                eps[outside] = torch.randn(int(outside.sum()), generator=generator)
                outside = (eps < self.low) | (eps > self.high)
        elif self.kind == "expected_norm":
            eps = eps * (expected_normal_norm(eps.numel()) / eps.norm())
        return eps

    def __str__(self) -> str:
        return f"truncated:{self.low:g},{self.high:g}" if self.kind == "truncated" else self.kind


def expected_normal_norm(d: int) -> float:
    """E||x||_2 for x ~ N(0, I_d): sqrt(2) Gamma((d+1)/2) / Gamma(d/2), computed in log space."""
    return math.sqrt(2.0) * math.exp(math.lgamma((d + 1) / 2) - math.lgamma(d / 2))


def make_noise(plan: Plan, shape: Sequence[int], seed: int = 0, image_id: str | int = 0,
               distribution: NoiseDistribution | str | None = None) -> torch.Tensor:
    """Noise tensor ``[len(plan), *shape]`` for one image; row i depends only on (seed, image_id, plan key i)."""
    dist = NoiseDistribution.parse(distribution)
    out = torch.empty((len(plan), *shape))
    gen = torch.Generator()
    for i, (t, k) in enumerate(plan.keys()):
        gen.manual_seed(sample_seed(seed, image_id, t, k))
        out[i] = dist.sample(shape, gen)
    return out
