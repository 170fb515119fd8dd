"""Tiny, randomly initialised diffusers pipelines of every family dclib supports.

They are built from configs (no download), saved with ``save_pretrained`` and loaded back through the same
``from_pretrained`` path as real checkpoints. Random weights: good for checking the plumbing and the maths,
meaningless as classifiers.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

import torch

DEFAULT_WORDS = ("a", "photo", "of", "the", "dog", "cat", "car", "bird", "red", "blue", "green", "small",
                 "large", "circle", "square", "triangle", "left", "right", "and", "above", "below")


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2 / CLIP's reversible byte -> printable unicode map."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def _bpe(word: str, ranks: dict) -> list[str]:
    """CLIP's BPE on one word (lowest-rank adjacent pair first, leftmost on ties)."""
    parts = list(word[:-1]) + [word[-1] + "</w>"]
    while len(parts) > 1:
        rank, i = min((ranks.get(pair, float("inf")), i) for i, pair in enumerate(zip(parts, parts[1:])))
        if rank == float("inf"):
            break
        parts = parts[:i] + [parts[i] + parts[i + 1]] + parts[i + 2:]
    return parts


def build_clip_tokenizer(words: Iterable[str] = DEFAULT_WORDS, model_max_length: int = 77):
    """A byte-level BPE CLIPTokenizer in which every word of ``words`` is exactly one token.

    Merges are added until the BPE of each word, simulated with all merges so far, is one piece (merges of
    earlier words can otherwise split later ones: ("a", "n") from "and" would cut "orange"). Merges appended
    later never change a word that is already one piece, so one pass suffices. Unknown words still tokenize
    (byte fallback). Vocab and merges are passed as Python objects: in transformers 5,
    ``CLIPTokenizer(vocab_file=..., merges_file=...)`` silently ignores the files.
    """
    from transformers import CLIPTokenizer

    words = sorted({w.lower() for w in words})
    symbols = list(_bytes_to_unicode().values())
    vocab: dict[str, int] = {}
    for s in symbols + [s + "</w>" for s in symbols]:
        vocab.setdefault(s, len(vocab))
    merges: list[tuple[str, str]] = []
    ranks: dict[tuple[str, str], int] = {}
    for word in words:
        while len(parts := _bpe(word, ranks)) > 1:
            pair = (parts[0], parts[1])
            ranks[pair] = len(merges)
            merges.append(pair)
            vocab.setdefault(pair[0] + pair[1], len(vocab))
    for special in ("<|startoftext|>", "<|endoftext|>"):
        vocab.setdefault(special, len(vocab))
    tokenizer = CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=model_max_length,
                              bos_token="<|startoftext|>", eos_token="<|endoftext|>", pad_token="<|endoftext|>",
                              unk_token="<|endoftext|>")
    split = [w for w in words if len(tokenizer(w).input_ids) != 3]
    if split:
        raise RuntimeError(f"tokenizer construction failed: {split[:5]} are not single tokens")
    return tokenizer


def _tiny_vae(sample_size: int = 32):
    from diffusers import AutoencoderKL

    return AutoencoderKL(block_out_channels=(32, 64), in_channels=3, out_channels=3, latent_channels=4,
                         sample_size=sample_size, down_block_types=("DownEncoderBlock2D",) * 2,
                         up_block_types=("UpDecoderBlock2D",) * 2, norm_num_groups=32)


def tiny_clip_config(tokenizer, num_hidden_layers: int = 2, **extra):
    """The tiny CLIP text encoder config every tiny pipeline here uses (width 32, 4 heads)."""
    from transformers import CLIPTextConfig

    return CLIPTextConfig(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                          pad_token_id=tokenizer.pad_token_id, hidden_size=32, intermediate_size=37,
                          num_attention_heads=4, num_hidden_layers=num_hidden_layers, vocab_size=len(tokenizer),
                          max_position_embeddings=77, **extra)


def tiny_sd_pipeline(prediction_type: str = "epsilon", seed: int = 0, words: Iterable[str] = DEFAULT_WORDS):
    """A StableDiffusionPipeline with 32 px images, 4x16x16 latents and a 5-layer CLIP text encoder."""
    from diffusers import DDPMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel

    torch.manual_seed(seed)
    tokenizer = build_clip_tokenizer(words)
    text_encoder = CLIPTextModel(tiny_clip_config(tokenizer, num_hidden_layers=5))
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64), layers_per_block=1, sample_size=16, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32, attention_head_dim=(2, 4), use_linear_projection=True, norm_num_groups=32)
    scheduler = DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                              num_train_timesteps=1000, prediction_type=prediction_type,
                              steps_offset=1, clip_sample=False)
    return StableDiffusionPipeline(vae=_tiny_vae(32), text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                   scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)


def tiny_dit_pipeline(num_classes: int = 10, seed: int = 0):
    """A DiTPipeline with learned sigma (8 output channels for 4 latent channels) on 4x8x8 latents."""
    from diffusers import DDPMScheduler, DiTPipeline, DiTTransformer2DModel

    torch.manual_seed(seed)
    transformer = DiTTransformer2DModel(num_attention_heads=2, attention_head_dim=16, in_channels=4,
                                        out_channels=8, num_layers=2, sample_size=8, patch_size=2,
                                        num_embeds_ada_norm=num_classes, norm_num_groups=32)
    # DiT's training schedule: linear betas 1e-4 .. 0.02 over 1000 steps.
    scheduler = DDPMScheduler(beta_schedule="linear", beta_start=0.0001, beta_end=0.02, num_train_timesteps=1000,
                              clip_sample=False)
    labels = {i: f"class_{i}" for i in range(num_classes)}
    pipe = DiTPipeline(transformer=transformer, vae=_tiny_vae(16), scheduler=scheduler, id2label=labels)
    pipe.register_to_config(id2label={str(k): v for k, v in labels.items()})  # else lost on reload
    return pipe


def save_tiny_image_classifier(path: str | Path, class_names: Iterable[str], seed: int = 0, width: int = 8,
                               image_size: int = 32) -> str:
    """A transformers ResNet image classifier (untrained, ``width`` channels) over ``class_names`` with a ResNet
    image processor (resize, center crop, ImageNet normalisation) at ``image_size``, saved as safetensors: a
    stand-in for the paper's ResNets and ViTs."""
    from transformers import ConvNextImageProcessor, ResNetConfig, ResNetForImageClassification

    names = list(class_names)
    torch.manual_seed(seed)
    config = ResNetConfig(embedding_size=width, hidden_sizes=[width, 2 * width], depths=[1, 1],
                          num_labels=len(names), id2label=dict(enumerate(names)),
                          label2id={n: i for i, n in enumerate(names)})
    model = ResNetForImageClassification(config)
    processor = ConvNextImageProcessor(size={"shortest_edge": image_size}, crop_pct=0.875)
    model.save_pretrained(path, safe_serialization=True)
    processor.save_pretrained(path)
    return str(path)


def tiny_pixel_pipeline(num_classes: int = 10, channels: int = 1, size: int = 8, seed: int = 0,
                        class_names: Iterable[str] | None = None, null_class: bool = True,
                        variance_type: str = "fixed_small", prediction_type: str = "epsilon"):
    """A DDPMPipeline around a class-conditional UNet2DModel in pixel space (+1 null class for guidance).

    ``variance_type="learned_range"`` gives the UNet twice the output channels: eps, then the variance value v in
    [-1, 1] that the scheduler interpolates log-variances with (improved DDPM).
    """
    from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel

    torch.manual_seed(seed)
    out_channels = 2 * channels if variance_type in ("learned", "learned_range") else channels
    unet = UNet2DModel(sample_size=size, in_channels=channels, out_channels=out_channels, layers_per_block=1,
                       block_out_channels=(32, 64), down_block_types=("DownBlock2D", "DownBlock2D"),
                       up_block_types=("UpBlock2D", "UpBlock2D"), norm_num_groups=8,
                       num_class_embeds=num_classes + int(null_class))
    scheduler = DDPMScheduler(beta_schedule="linear", beta_start=0.0001, beta_end=0.02, num_train_timesteps=1000,
                              clip_sample=False, variance_type=variance_type, prediction_type=prediction_type)
    names = list(class_names) if class_names is not None else [str(i) for i in range(num_classes)]
    pipe = DDPMPipeline(unet=unet, scheduler=scheduler)
    pipe.register_to_config(id2label={str(i): n for i, n in enumerate(names)})
    return pipe


def build_t5_tokenizer(words: Iterable[str] = DEFAULT_WORDS):
    """A unigram T5 tokenizer in which every word of ``words`` is one piece (anything else is ``<unk>``)."""
    from transformers import T5Tokenizer

    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    pieces += [("▁" + w, -1.0) for w in sorted({w.lower() for w in words})]
    return T5Tokenizer(vocab=pieces, extra_ids=0)


def tiny_sd3_pipeline(seed: int = 0, words: Iterable[str] = DEFAULT_WORDS, t5: bool = True):
    """A StableDiffusion3Pipeline (flow matching, shift 3) with 16 px images and 4x8x8 latents.

    Two CLIP text encoders with projections (pooled 32 + 32 = 64) share one tokenizer; the T5 encoder (d_model
    64 = the transformer's joint_attention_dim) is left out with ``t5=False``, as ``text_encoder_3=None`` does.
    The VAE has a ``shift_factor``, like SD3's, so latents are (mean - shift) * scale.
    """
    from diffusers import (AutoencoderKL, FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel,
                           StableDiffusion3Pipeline)
    from transformers import CLIPTextModelWithProjection, T5Config, T5EncoderModel

    torch.manual_seed(seed)
    tokenizer = build_clip_tokenizer(words)

    def clip():
        return CLIPTextModelWithProjection(tiny_clip_config(tokenizer, projection_dim=32))

    text_encoder, text_encoder_2 = clip(), clip()
    tokenizer_3 = text_encoder_3 = None
    if t5:
        tokenizer_3 = build_t5_tokenizer(words)
        text_encoder_3 = T5EncoderModel(T5Config(d_model=64, d_kv=16, d_ff=64, num_layers=2, num_heads=4,
                                                 vocab_size=len(tokenizer_3), decoder_start_token_id=0))
    transformer = SD3Transformer2DModel(
        sample_size=8, patch_size=2, in_channels=4, out_channels=4, num_layers=2, attention_head_dim=8,
        num_attention_heads=4, joint_attention_dim=64, caption_projection_dim=32, pooled_projection_dim=64,
        pos_embed_max_size=16)
    vae = AutoencoderKL(block_out_channels=(32, 64), in_channels=3, out_channels=3, latent_channels=4,
                        sample_size=16, down_block_types=("DownEncoderBlock2D",) * 2,
                        up_block_types=("UpDecoderBlock2D",) * 2, norm_num_groups=32, shift_factor=0.0609,
                        scaling_factor=1.5305, use_quant_conv=False, use_post_quant_conv=False)
    return StableDiffusion3Pipeline(
        transformer=transformer, scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0), vae=vae,
        text_encoder=text_encoder, tokenizer=tokenizer, text_encoder_2=text_encoder_2, tokenizer_2=tokenizer,
        text_encoder_3=text_encoder_3, tokenizer_3=tokenizer_3)


def tiny_sdxl_pipeline(seed: int = 0, words: Iterable[str] = DEFAULT_WORDS):
    """A StableDiffusionXLPipeline with 32 px images and 4x16x16 latents, built as SDXL base is.

    Two CLIP text encoders (the second with a projection: pooled 32) share one tokenizer; their penultimate
    hidden states (32 + 32) are the UNet's cross-attention input, and the added embedding takes 6 time ids x 8
    + the pooled 32 = 80 values. Euler scheduler with SDXL's betas; the VAE says ``force_upcast`` as SDXL's does.
    """
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(seed)
    tokenizer = build_clip_tokenizer(words)
    text_encoder = CLIPTextModel(tiny_clip_config(tokenizer, projection_dim=32))
    text_encoder_2 = CLIPTextModelWithProjection(tiny_clip_config(tokenizer, projection_dim=32))
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64), layers_per_block=1, sample_size=16, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=64, attention_head_dim=(2, 4), use_linear_projection=True, norm_num_groups=32,
        addition_embed_type="text_time", addition_time_embed_dim=8, projection_class_embeddings_input_dim=80,
        transformer_layers_per_block=(1, 1))
    scheduler = EulerDiscreteScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                                       num_train_timesteps=1000, prediction_type="epsilon", steps_offset=1,
                                       timestep_spacing="leading")
    vae = _tiny_vae(32)
    vae.register_to_config(force_upcast=True)
    return StableDiffusionXLPipeline(vae=vae, text_encoder=text_encoder, text_encoder_2=text_encoder_2,
                                     tokenizer=tokenizer, tokenizer_2=tokenizer, unet=unet, scheduler=scheduler,
                                     add_watermarker=False)


def tiny_flux_pipeline(seed: int = 0, words: Iterable[str] = DEFAULT_WORDS, guidance_embeds: bool = True):
    """A FluxPipeline with 16 px images, 4x8x8 latents packed into 16 tokens of 16 channels.

    ``guidance_embeds=True`` is built like FLUX.1-dev (guidance embedding, dynamic shifting of the sigmas by
    resolution), ``False`` like FLUX.1-schnell (fixed shift 1). CLIP (pooled 32) and T5 (d_model 32 = the
    transformer's joint_attention_dim); the VAE has FLUX's shift and scaling factors and its pixel size in
    ``sample_size``, the adapter's default resolution.
    """
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    from transformers import CLIPTextModel, T5Config, T5EncoderModel

    torch.manual_seed(seed)
    tokenizer = build_clip_tokenizer(words)
    text_encoder = CLIPTextModel(tiny_clip_config(tokenizer))
    tokenizer_2 = build_t5_tokenizer(words)
    text_encoder_2 = T5EncoderModel(T5Config(d_model=32, d_kv=8, d_ff=32, num_layers=2, num_heads=4,
                                             vocab_size=len(tokenizer_2), decoder_start_token_id=0))
    transformer = FluxTransformer2DModel(
        patch_size=1, in_channels=16, num_layers=1, num_single_layers=1, attention_head_dim=16,
        num_attention_heads=2, joint_attention_dim=32, pooled_projection_dim=32, guidance_embeds=guidance_embeds,
        axes_dims_rope=(4, 4, 8))
    vae = AutoencoderKL(block_out_channels=(32, 64), in_channels=3, out_channels=3, latent_channels=4,
                        sample_size=16, down_block_types=("DownEncoderBlock2D",) * 2,
                        up_block_types=("UpDecoderBlock2D",) * 2, norm_num_groups=32, shift_factor=0.1159,
                        scaling_factor=0.3611, use_quant_conv=False, use_post_quant_conv=False)
    if guidance_embeds:  # FLUX.1-dev's scheduler config
        scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=True, base_shift=0.5,
                                                    max_shift=1.15, base_image_seq_len=256, max_image_seq_len=4096)
    else:  # FLUX.1-schnell's
        scheduler = FlowMatchEulerDiscreteScheduler(shift=1.0, use_dynamic_shifting=False)
    return FluxPipeline(scheduler=scheduler, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer,
                        text_encoder_2=text_encoder_2, tokenizer_2=tokenizer_2, transformer=transformer)


def save_tiny_models(root: str | Path, names: Iterable[str] | None = None) -> dict[str, str]:
    """Save one tiny pipeline of each kind under ``root`` (or only those in ``names``); returns {name: folder}.

    ``sd3``, ``sdxl``, ``flux`` and ``flux-schnell`` are built only when asked for by name: the shared test
    fixture leaves them out.
    """
    root = Path(root)
    builders = {
        "sd": lambda: tiny_sd_pipeline("epsilon"),
        "sd-v": lambda: tiny_sd_pipeline("v_prediction", seed=1),
        "dit": tiny_dit_pipeline,
        "pixel": tiny_pixel_pipeline,
        "sd3": tiny_sd3_pipeline,
        "sdxl": tiny_sdxl_pipeline,
        "flux": tiny_flux_pipeline,
        "flux-schnell": lambda: tiny_flux_pipeline(seed=1, guidance_embeds=False),
    }
    wanted = list(names) if names is not None else ["sd", "sd-v", "dit", "pixel"]
    unknown = sorted(set(wanted) - set(builders))
    if unknown:
        raise ValueError(f"unknown tiny models {unknown}; available: {', '.join(builders)}")
    out = {}
    for name in wanted:
        path = root / name
        builders[name]().save_pretrained(path, safe_serialization=True)
        out[name] = str(path)
    return out
