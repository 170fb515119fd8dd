"""The shapes captions' tokenizer: a CLIPTokenizer with one token per caption word, TRAIN and HELD-OUT alike."""
from __future__ import annotations

import re

import torch

from ..data import COLOUR_NAMES, SHAPES, SIZES
from ..data import captions as cap
from ..testing.tiny import build_clip_tokenizer
from .scenes import TEMPLATE_SLOT


def caption_words() -> list[str]:
    """Every word any TRAIN or HELD-OUT caption can contain (so held-out words are known tokens)."""
    words: set[str] = set()
    for t in cap.TEMPLATES:
        words.update(re.findall(r"[a-z]+", TEMPLATE_SLOT.sub(" ", t.text.lower())))
    for phrase in cap.WHERE.values():
        words.update(phrase.split())
    words.update(SHAPES)
    words.update(COLOUR_NAMES)
    words.update(SIZES)
    words.add("an")  # captions.fill turns "a orange" into "an orange"
    return sorted(words)


def build_word_tokenizer(words=None, model_max_length: int = 16):
    """The shapes vocabulary as a CLIPTokenizer with one token per caption word (train and held-out words)."""
    return build_clip_tokenizer(caption_words() if words is None else words, model_max_length)


def longest_caption_tokens(tokenizer) -> int:
    """Token count (with BOS/EOS) of the longest caption any template can produce."""
    longest = 0
    for t in cap.TEMPLATES:
        for where in cap.WHERE.values():
            # every shape/colour/size word is one token, so any filler gives the same length, up to "a"/"an"
            for colour in COLOUR_NAMES[:1] + ("orange",):
                slots = {"shape1": SHAPES[0], "shape2": SHAPES[0], "colour1": colour, "colour2": colour,
                         "size1": SIZES[0], "size2": SIZES[0], "where1": where}
                longest = max(longest, len(tokenizer(cap.fill(t.text, **slots)).input_ids))
    return longest


def tokenize(tokenizer, texts) -> torch.Tensor:
    """Exactly as dclib's StableDiffusionAdapter tokenizes prompts."""
    return tokenizer(list(texts), padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                     return_tensors="pt").input_ids
