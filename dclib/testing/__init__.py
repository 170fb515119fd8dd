"""Tiny diffusers models built offline from configs, and tiny user data (an image folder, a prompt CSV), for
tests, benchmarks and examples."""
from .folders import TINY_CLASSES, save_image_folder, save_prompt_csv
from .tiny import (build_clip_tokenizer, build_t5_tokenizer, tiny_dit_pipeline, tiny_pixel_pipeline,
                   tiny_sd3_pipeline, tiny_sd_pipeline, save_tiny_image_classifier, save_tiny_models)

__all__ = ["build_clip_tokenizer", "build_t5_tokenizer", "tiny_sd_pipeline", "tiny_sd3_pipeline",
           "tiny_dit_pipeline", "tiny_pixel_pipeline", "save_tiny_models", "save_tiny_image_classifier", "TINY_CLASSES",
           "save_image_folder", "save_prompt_csv"]
