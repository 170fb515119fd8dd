"""Text-to-image models for the shapes scenes, trained from scratch on CPU (the Stable Diffusion analogue).

``train_shapes`` builds ``embedded:shapes``: a real ``StableDiffusionPipeline`` folder --
a small ``AutoencoderKL`` (32x32x3 -> 4x16x16 latents, trained first, then frozen; ``scaling_factor`` =
1 / std of the training latents, as SD did), a ``CLIPTextModel`` trained jointly with a
``UNet2DConditionModel`` that reads every text token through cross-attention (a pooled text vector cannot
bind colours to objects, see shared/notes/embedded-model-findings.md), eps-prediction, DDPM
``scaled_linear`` betas 0.00085..0.012, T = 1000 (SD's schedule).

``train_shapes_clip`` builds ``embedded:shapes-clip``: the contrastive baseline, a transformers
``CLIPModel`` (small ViT on 32x32 images; a text tower of the same size as the diffusion model's text
encoder, same tokenizer) trained with a symmetric InfoNCE loss on the same scenes and TRAIN captions.

Training data: the 50k ``embedded:shapes-train`` scenes (``render_scenes(50_000, TRAIN_SEED)``), re-captioned
at every draw with a random TRAIN template that fits the scene (so each picture is seen with all its TRAIN
wordings). HELD-OUT templates are never used for training; they give the validation losses that measure
generalisation to new wordings.

This module gathers the public names; the work is split by job:

- ``shapes_recipes``: ``ShapesRecipe``, ``SHAPES_RECIPES``, ``ClipRecipe``, ``CLIP_RECIPES`` (settings and time budgets);
- ``tokenizer``: the word-level tokenizer of the captions;
- ``scenes``: ``ScenePool`` (scenes and captions drawn per use), caption truth and hard negatives;
- ``shapes_models``: building and saving the networks (VAE, text encoder, UNet, scheduler, CLIPModel);
- ``vae``: the VAE stage; ``text_to_image``: ``train_shapes``; ``clip``: ``train_shapes_clip``;
- ``loop``: the training loop both share with the pixel recipes.
"""
from __future__ import annotations

from .clip import CLIP_CARD, multi_positive_nce, train_shapes_clip
from .scenes import VAL_SEED, ScenePool, caption_truth, hard_negatives, swap_scene
from .shapes_models import (PREDICTION_TYPES, build_clip, build_pipeline, build_scheduler, build_text_encoder,
                            build_unet, build_vae, save_clip, save_pipeline, text_config, use_fast_cpu_attention)
from .shapes_recipes import CLIP_RECIPES, SHAPES_RECIPES, ClipRecipe, ShapesRecipe
from .text_to_image import LOSS_WEIGHTINGS, SHAPES_CARD, TimestepLossBalance, train_shapes, training_target
from .tokenizer import build_word_tokenizer, caption_words, longest_caption_tokens, tokenize
from .vae import encode_latents, reconstruction_mse, train_vae

__all__ = [
    "SHAPES_RECIPES", "ShapesRecipe", "ClipRecipe", "CLIP_RECIPES",
    "caption_words", "build_word_tokenizer", "longest_caption_tokens", "tokenize",
    "VAL_SEED", "ScenePool", "caption_truth", "swap_scene", "hard_negatives",
    "PREDICTION_TYPES", "text_config", "build_vae", "build_text_encoder", "build_unet", "build_scheduler",
    "build_pipeline", "save_pipeline", "build_clip", "save_clip", "use_fast_cpu_attention",
    "train_vae", "encode_latents", "reconstruction_mse",
    "LOSS_WEIGHTINGS", "TimestepLossBalance", "training_target", "train_shapes", "SHAPES_CARD",
    "multi_positive_nce", "train_shapes_clip", "CLIP_CARD",
]
