"""The shapes recipes' networks: how each is built for training and saved for dclib to load.

Text-to-image: ``AutoencoderKL``, ``CLIPTextModel`` and ``UNet2DConditionModel`` with SD's DDPM scheduler,
saved as a ``StableDiffusionPipeline`` folder. Contrastive: a transformers ``CLIPModel``.
"""
from __future__ import annotations

import copy
import json
from pathlib import Path

import torch
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
from diffusers.models.attention_processor import AttnProcessor
from transformers import CLIPConfig, CLIPModel, CLIPTextConfig, CLIPTextModel, CLIPVisionConfig

from ..adapters.loading import quiet_hf_logging
from .shapes_recipes import ClipRecipe, ShapesRecipe

with quiet_hf_logging():  # it loads transformers' image processors, which warn when torchvision is missing
    from diffusers import StableDiffusionPipeline

PREDICTION_TYPES = ("epsilon", "v_prediction")


def check_prediction_type(prediction_type: str) -> None:
    if prediction_type not in PREDICTION_TYPES:
        raise ValueError(f"prediction_type must be one of {PREDICTION_TYPES}, got {prediction_type!r}")


def text_config(tokenizer, hidden: int, layers: int, heads: int, intermediate: int):
    return CLIPTextConfig(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=intermediate,
                          num_hidden_layers=layers, num_attention_heads=heads,
                          max_position_embeddings=tokenizer.model_max_length, projection_dim=hidden,
                          bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                          pad_token_id=tokenizer.pad_token_id)


# ----------------------------------------------------------------------------------------------- text-to-image


def build_vae(recipe: ShapesRecipe):
    n = len(recipe.vae_channels)
    return AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, sample_size=32,
                         block_out_channels=tuple(recipe.vae_channels), layers_per_block=1,
                         down_block_types=("DownEncoderBlock2D",) * n, up_block_types=("UpDecoderBlock2D",) * n,
                         norm_num_groups=min(32, recipe.vae_channels[0]))


def build_text_encoder(recipe: ShapesRecipe, tokenizer) -> CLIPTextModel:
    return CLIPTextModel(text_config(tokenizer, recipe.text_hidden, recipe.text_layers, recipe.text_heads,
                                     recipe.text_intermediate))


def build_unet(recipe: ShapesRecipe, latent_side: int):
    attn = tuple(recipe.attention_levels)
    down = tuple("CrossAttnDownBlock2D" if a else "DownBlock2D" for a in attn)
    up = tuple("CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attn))
    return UNet2DConditionModel(
        sample_size=latent_side, in_channels=4, out_channels=4, block_out_channels=tuple(recipe.unet_channels),
        layers_per_block=recipe.layers_per_block, down_block_types=down, up_block_types=up,
        cross_attention_dim=recipe.text_hidden,
        attention_head_dim=tuple(recipe.heads), use_linear_projection=True,
        norm_num_groups=min(32, recipe.unet_channels[0]))


def build_scheduler(recipe: ShapesRecipe | None = None):
    recipe = recipe or ShapesRecipe()
    check_prediction_type(recipe.prediction_type)
    return DDPMScheduler(num_train_timesteps=1000, beta_schedule=recipe.beta_schedule, beta_start=recipe.beta_start,
                         beta_end=recipe.beta_end, prediction_type=recipe.prediction_type, clip_sample=False,
                         steps_offset=1)


def build_pipeline(vae, text_encoder, tokenizer, unet, recipe: ShapesRecipe | None = None):
    return StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                   scheduler=build_scheduler(recipe), safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)


def save_pipeline(vae, text_encoder, tokenizer, unet, path: Path, recipe: ShapesRecipe | None = None) -> None:
    """fp16 weights on disk (small); dclib loads them as float32."""
    with quiet_hf_logging():  # diffusers warns about casting with .to(); nothing here needs to stay fp32
        half = [copy.deepcopy(m).to(torch.float16) for m in (vae, text_encoder, unet)]
        build_pipeline(half[0], half[1], tokenizer, half[2], recipe).save_pretrained(path, safe_serialization=True)


# ----------------------------------------------------------------------------------------------- contrastive


def build_clip(recipe: ClipRecipe, tokenizer):
    vision = CLIPVisionConfig(image_size=32, patch_size=recipe.patch_size, num_channels=3,
                              hidden_size=recipe.vision_hidden, intermediate_size=recipe.vision_intermediate,
                              num_hidden_layers=recipe.vision_layers, num_attention_heads=recipe.vision_heads,
                              projection_dim=recipe.projection_dim)
    text = text_config(tokenizer, recipe.text_hidden, recipe.text_layers, recipe.text_heads, recipe.text_intermediate)
    text.projection_dim = recipe.projection_dim
    config = CLIPConfig(text_config=text.to_dict(), vision_config=vision.to_dict(),
                        projection_dim=recipe.projection_dim)
    return CLIPModel(config)


def save_clip(model, tokenizer, path: Path, recipe: ClipRecipe) -> None:
    path = Path(path)
    with quiet_hf_logging():
        copy.deepcopy(model).to(torch.float16).save_pretrained(path, safe_serialization=True)
        tokenizer.save_pretrained(path)
    # A marker so `embedded:shapes-clip` resolves through dclib.adapters.loading.resolve_model_path; the
    # diffusion loader rejects it with a clear "is a CLIPModel" message.
    (path / "model_index.json").write_text(json.dumps(
        {"_class_name": "CLIPModel", "_dclib_kind": "contrastive", "resolution": 32,
         "loader": "dclib.contrastive.ContrastiveModel"}, indent=2) + "\n")


# ----------------------------------------------------------------------------------------------- both


def use_fast_cpu_attention(*models) -> None:
    """Plain (bmm + softmax) attention for training: on CPU, the backward pass of torch's fused SDPA kernel
    made up ~30% of a training step at these sequence lengths (16-256 tokens); the maths is the same, and
    nothing of this is saved (loading gives the library defaults back)."""
    for model in models:
        if hasattr(model, "set_attn_processor"):
            model.set_attn_processor(AttnProcessor())
        else:
            for config in (model.config, getattr(model.config, "text_config", None),
                           getattr(model.config, "vision_config", None)):
                if config is not None:
                    config._attn_implementation = "eager"
