"""Tiny diffusers models built offline from configs, for tests, benchmarks and examples."""
from .tiny import (build_clip_tokenizer, build_t5_tokenizer, tiny_dit_pipeline, tiny_pixel_pipeline,
                   tiny_sd3_pipeline, tiny_sd_pipeline, save_tiny_models)

__all__ = ["build_clip_tokenizer", "build_t5_tokenizer", "tiny_sd_pipeline", "tiny_sd3_pipeline",
           "tiny_dit_pipeline", "tiny_pixel_pipeline", "save_tiny_models"]
