"""Model families behind one small interface (:class:`DiffusionAdapter`)."""
from .base import DiffusionAdapter
from .dit import DiTAdapter
from .flow_matching import FlowMatchingAdapter, StableDiffusion3Adapter
from .flux import FluxAdapter
from .loading import ADAPTERS, load_adapter, resolve_model_path
from .pixel_unet import PixelUNetAdapter
from .sdxl import StableDiffusionXLAdapter
from .stable_diffusion import StableDiffusionAdapter

__all__ = ["DiffusionAdapter", "StableDiffusionAdapter", "DiTAdapter", "PixelUNetAdapter", "FlowMatchingAdapter",
           "StableDiffusion3Adapter", "StableDiffusionXLAdapter", "FluxAdapter", "load_adapter", "resolve_model_path",
           "ADAPTERS"]
