"""The prompt tokenizer of text+modality → image generation, trained on the training captions.

A word-level tokenizer (HF ``tokenizers`` ``WordLevel``), not BPE: the captions are short
radiology sentences over a small closed vocabulary ("FLAIR brain MRI with 2 metastases;
largest 14 mm in the left frontal lobe."), so one token per word keeps every token a readable
word, decodes back to the (lower-cased) words exactly, and maps a word never seen in training to
``[UNK]`` instead of meaningless sub-word fragments. Digits are split one per token, so a
diameter or lesion count never seen in training ("23 mm") is still spelt from known tokens.

Token ids: ``[PAD]`` = 0 (the diffusion core's null condition for token ids is all zeros, i.e. all
padding, see `medgen.text2image.network`), ``[UNK]`` = 1, ``[BOS]`` = 2, ``[EOS]`` = 3, then the
words by frequency. Every prompt becomes ``[BOS] words… [EOS] [PAD]…`` of exactly
``max_length`` ids (truncated prompts keep their ``[EOS]``); the empty prompt is
``[BOS, EOS, PAD, …]``.

Storage: `tokenizer_to_json` / `tokenizer_from_json` give a plain dict, saved and loaded by a
Kedro ``json.JSONDataset`` entry.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

PAD, UNK, BOS, EOS = "[PAD]", "[UNK]", "[BOS]", "[EOS]"
#: In id order: ``[PAD]`` must be 0.
SPECIAL_TOKENS = (PAD, UNK, BOS, EOS)
PAD_ID = 0
#: ``format`` of the stored JSON.
FORMAT = "medgen.text2image.tokenizer/1"


def train_tokenizer(
    captions: Sequence[str], *, vocab_size: int, min_frequency: int, max_length: int
) -> PreTrainedTokenizerFast:
    """A word-level tokenizer trained on ``captions`` (see the module docstring).

    Args:
        captions: the training captions (never validation or test ones).
        vocab_size: largest vocabulary, the four special tokens included; the most frequent
            words are kept.
        min_frequency: words seen fewer times become ``[UNK]``.
        max_length: ids per prompt, ``[BOS]`` and ``[EOS]`` included (padding and truncation).
    """
    captions = [str(c) for c in captions]
    if not captions:
        raise ValueError("train_tokenizer: no captions to train on")
    if vocab_size <= len(SPECIAL_TOKENS):
        raise ValueError(f"vocab_size must exceed the {len(SPECIAL_TOKENS)} special tokens")
    if max_length < 2:
        raise ValueError(f"max_length must be >= 2 ([BOS] and [EOS]), got {max_length}")
    backend = Tokenizer(models.WordLevel(unk_token=UNK))
    backend.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.WhitespaceSplit(),
            pre_tokenizers.Punctuation(),
            pre_tokenizers.Digits(individual_digits=True),
        ]
    )
    trainer = trainers.WordLevelTrainer(
        vocab_size=int(vocab_size),
        min_frequency=int(min_frequency),
        special_tokens=list(SPECIAL_TOKENS),
        show_progress=False,
    )
    backend.train_from_iterator(captions, trainer)
    ids = [backend.token_to_id(t) for t in SPECIAL_TOKENS]
    if ids != list(range(len(SPECIAL_TOKENS))):  # the trainer puts them first; make sure
        raise RuntimeError(f"special tokens got ids {ids}, expected 0..{len(ids) - 1}")
    backend.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A {EOS}", special_tokens=[(BOS, ids[2]), (EOS, ids[3])]
    )
    return _wrap(backend, int(max_length))


def _wrap(backend: Tokenizer, max_length: int) -> PreTrainedTokenizerFast:
    backend.enable_padding(pad_id=PAD_ID, pad_token=PAD, length=max_length)
    backend.enable_truncation(max_length=max_length)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token=PAD,
        unk_token=UNK,
        bos_token=BOS,
        eos_token=EOS,
        model_max_length=max_length,
    )
    if tokenizer.pad_token_id != PAD_ID:
        raise RuntimeError(f"[PAD] has id {tokenizer.pad_token_id}, the null condition needs 0")
    return tokenizer


def tokenize(tokenizer: PreTrainedTokenizerFast, prompts: Sequence[str]) -> torch.Tensor:
    """int64 token ids ``[len(prompts), max_length]``: ``[BOS] … [EOS]`` then ``[PAD]`` (0)."""
    if isinstance(prompts, str):
        raise TypeError("tokenize takes a list of prompts, not one string")
    encoded = tokenizer(
        [str(p) for p in prompts],
        padding="max_length",
        truncation=True,
        max_length=tokenizer.model_max_length,
        return_tensors="pt",
    )
    return encoded["input_ids"].long()


def empty_prompt_ids(tokenizer: PreTrainedTokenizerFast) -> torch.Tensor:
    """The empty prompt's ids ``[max_length]``: ``[BOS, EOS, PAD, …]``."""
    return tokenize(tokenizer, [""])[0]


def tokenizer_info(tokenizer: PreTrainedTokenizerFast) -> dict[str, int]:
    """What the text encoder needs to know of the tokenizer (JSON values, a job option):
    ``vocab_size``, ``bos_id``, ``eos_id``, ``max_length``."""
    return {
        "vocab_size": len(tokenizer),
        "bos_id": int(tokenizer.bos_token_id),
        "eos_id": int(tokenizer.eos_token_id),
        "max_length": int(tokenizer.model_max_length),
    }


def tokenizer_to_json(tokenizer: PreTrainedTokenizerFast) -> dict[str, Any]:
    """The tokenizer as a JSON dict (for a Kedro ``json.JSONDataset``): the ``tokenizers``
    serialisation and ``max_length``."""
    return {
        "format": FORMAT,
        "max_length": int(tokenizer.model_max_length),
        "tokenizer": json.loads(tokenizer.backend_tokenizer.to_str()),
    }


def tokenizer_from_json(data: Mapping[str, Any]) -> PreTrainedTokenizerFast:
    """Inverse of `tokenizer_to_json`."""
    if data.get("format") != FORMAT or "tokenizer" not in data or "max_length" not in data:
        raise ValueError(
            f"not a medgen tokenizer (format {data.get('format')!r}, expected {FORMAT!r} with "
            "'tokenizer' and 'max_length'): write it with tokenizer_to_json"
        )
    backend = Tokenizer.from_str(json.dumps(data["tokenizer"]))
    return _wrap(backend, int(data["max_length"]))
