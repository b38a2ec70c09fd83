"""The caption tokenizer: training, ids, JSON round trip through a Kedro dataset."""

from __future__ import annotations

import pytest
import torch
from kedro_datasets.json import JSONDataset

from medgen.text2image.tokenizer import (
    BOS,
    EOS,
    PAD_ID,
    UNK,
    empty_prompt_ids,
    tokenize,
    tokenizer_from_json,
    tokenizer_info,
    tokenizer_to_json,
    train_tokenizer,
)

CAPTIONS = [
    "FLAIR brain MRI without visible metastases.",
    "T1-weighted post-gadolinium brain MRI with a single metastasis; largest 14 mm in the left "
    "frontal lobe.",
    "BRAVO post-contrast T1 brain MRI with 2 metastases; largest 9 mm in the right cerebellum.",
    "FLAIR brain MRI with 3 metastases; largest 21 mm in the right parietal lobe.",
]
MAX_LENGTH = 32


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(CAPTIONS, vocab_size=200, min_frequency=1, max_length=MAX_LENGTH)


def words(tokenizer, text: str) -> list[str]:
    """``text`` as the tokenizer splits it into words (normalised, pre-tokenised)."""
    backend = tokenizer.backend_tokenizer
    return [
        w for w, _ in backend.pre_tokenizer.pre_tokenize_str(backend.normalizer.normalize_str(text))
    ]


def test_special_ids_and_layout(tokenizer):
    ids = tokenize(tokenizer, CAPTIONS)
    assert ids.dtype == torch.int64 and ids.shape == (len(CAPTIONS), MAX_LENGTH)
    assert tokenizer.pad_token_id == PAD_ID == 0
    bos, eos = tokenizer.convert_tokens_to_ids([BOS, EOS])
    for row, caption in zip(ids, CAPTIONS, strict=True):
        n = len(words(tokenizer, caption))
        assert row[0] == bos and row[n + 1] == eos
        assert (row[n + 2 :] == PAD_ID).all() and (row[1 : n + 1] > 3).all()
    assert tokenizer_info(tokenizer) == {
        "vocab_size": len(tokenizer),
        "bos_id": bos,
        "eos_id": eos,
        "max_length": MAX_LENGTH,
    }


def test_empty_prompt_is_bos_eos_then_padding(tokenizer):
    empty = empty_prompt_ids(tokenizer)
    bos, eos = tokenizer.convert_tokens_to_ids([BOS, EOS])
    assert empty.tolist() == [bos, eos] + [PAD_ID] * (MAX_LENGTH - 2)
    assert torch.equal(tokenize(tokenizer, [""])[0], empty)


def test_unknown_words_become_unk(tokenizer):
    ids = tokenize(tokenizer, ["glioblastoma brain"])[0]
    assert ids[1] == tokenizer.convert_tokens_to_ids(UNK) == tokenizer.unk_token_id
    assert ids[2] == tokenizer.convert_tokens_to_ids("brain")
    # unseen numbers are spelt with seen digits, not UNK
    assert tokenizer.unk_token_id not in tokenize(tokenizer, ["23 mm"])[0].tolist()


def test_min_frequency_and_vocab_size():
    rare = train_tokenizer(CAPTIONS, vocab_size=200, min_frequency=3, max_length=8)
    assert tokenize(rare, ["cerebellum"])[0, 1] == rare.unk_token_id  # seen once
    assert tokenize(rare, ["brain"])[0, 1] != rare.unk_token_id  # seen four times
    small = train_tokenizer(CAPTIONS, vocab_size=10, min_frequency=1, max_length=8)
    assert len(small) == 10


def test_truncation_keeps_eos(tokenizer):
    long = " ".join(["brain"] * (3 * MAX_LENGTH))
    ids = tokenize(tokenizer, [long])[0]
    assert ids.shape == (MAX_LENGTH,)
    assert ids[-1] == tokenizer.eos_token_id and (ids != PAD_ID).all()


def test_json_round_trip_through_kedro_dataset(tokenizer, tmp_path):
    dataset = JSONDataset(filepath=str(tmp_path / "tokenizer.json"))
    dataset.save(tokenizer_to_json(tokenizer))
    loaded = tokenizer_from_json(dataset.load())
    prompts = [*CAPTIONS, "", "unknown words here", "brain " * 50]
    assert torch.equal(tokenize(loaded, prompts), tokenize(tokenizer, prompts))
    assert tokenizer_info(loaded) == tokenizer_info(tokenizer)
    for caption, row in zip(CAPTIONS, tokenize(loaded, CAPTIONS), strict=True):
        decoded = loaded.decode(row, skip_special_tokens=True)
        assert decoded.split() == words(tokenizer, caption)
        assert decoded == decoded.lower()


def test_bad_json_and_arguments_fail_clearly():
    with pytest.raises(ValueError, match="not a medgen tokenizer"):
        tokenizer_from_json({"vocab": {}})
    with pytest.raises(ValueError, match="no captions"):
        train_tokenizer([], vocab_size=100, min_frequency=1, max_length=8)
    with pytest.raises(ValueError, match="max_length"):
        train_tokenizer(CAPTIONS, vocab_size=100, min_frequency=1, max_length=1)
