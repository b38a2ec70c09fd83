"""The Policy of text2image_rlhf: a prompt-image alignment scorer, score(image, text) in [0, 1].

A dual encoder, trained from scratch on the real training slices and their captions (one
`medgen.training.TrainingJob`; nothing is downloaded):

* **text tower**: the part-1 CLIP-style text encoder (`network.build_text_encoder`, the
  one text-encoder construction of text2image) over the part-1 prompt tokenizer, pooled at
  ``[EOS]`` (the only position a causal encoder lets see the whole prompt), then a linear
  projection;
* **image tower**: a MONAI ``Regressor`` (residual convolution units, one at full resolution,
  then three of stride 2, and a linear map of the flattened ``resolution / 8`` feature map,
  so WHERE a lesion is survives: no global average pool), 1 channel, images resized to
  ``resolution`` (antialiased). A mirrored image only enters with its side-swapped caption
  (``mirror``): plain flip augmentation would teach that left and right do not matter;
* both L2-normalised in a shared ``embed_dim`` space; ``score = sigmoid(scale * cos +
  bias)`` with a learned scale (exp of a log, initialised to `_INITIAL_SCALE` = 30, at most
  100 as in CLIP) and bias (initialised to 0, even odds).

**Loss: SigLIP's pairwise sigmoid loss** (Zhai et al. 2023, "Sigmoid Loss for Language Image
Pre-Training"), chosen over InfoNCE because it is a binary match/no-match likelihood per
(image, text) pair: its sigmoid IS the [0, 1] score the reward and the best-of-N threshold
need, the same whichever other candidates are scored with it. An InfoNCE (softmax) score only
ranks the texts of one batch against each other; turning it into an absolute probability
needs a second, separately calibrated head. Labels and weights:

* positives: every (image, caption) pair of a batch whose captions are identical (the
  diagonal, and other images with the very same caption: they match it too);
* **in-batch shuffled negatives**: every other pair of the batch (captions of other images);
* **attribute-swapped negatives**: for each image, its caption with one attribute made false
  (`medgen.text2image.caption_swaps`: modality, side, lesion presence, count; the kinds of
  ``swap_kinds``), drawn once per training item with the job's seed;
* each group is averaged on its own (swaps: per kind, then over the kinds in the batch, so
  the rare lesion-only kinds are not drowned by the modality swaps); the loss is
  ``(positives + (1 - swap_weight) * shuffled + swap_weight * swapped) / 2``. Positives and
  negatives carry equal total weight, so the score is calibrated to even odds ("as likely
  matched as not" at 0.5), not to the share of matching pairs in a batch of a given size.

Read the numbers with `evaluate_alignment`: held-out-patient AUROC of matched vs swapped
captions (per kind and overall) and of matched vs shuffled captions, and beside them the
same numbers of a scorer trained on shuffled captions (`shuffle_captions`, the negative
control): what a scorer reaches from caption statistics alone (e.g. "a swapped caption is a
rarer sentence") without looking at the image. Per kind, ``balanced_auroc`` averages the
AUROC over the stated values the swap starts from (lesion absent -> present and present ->
absent, ...): a caption-only scorer wins one direction and loses the other there, while the
pooled ``auroc`` of an unbalanced held-out set credits it with the majority's share. The held-out AUROC of a kind is only as
good as the distinct lesions behind it: with few training patients a kind can be learned on
the training slices and stay at chance on held-out ones (compare both before trusting it).

Size: one contract in one place: the parameter block, the network, its loss and training job,
scoring and the evaluation share the scorer bundle's metadata (model sizes, tokenizer
digest, swap modalities, training subjects for the held-out check).
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from monai.networks.nets import Regressor
from torch import nn
from torch.utils.data import Dataset

from medgen.config import config_to_dict, config_tree_from_params, require_positive_ints
from medgen.data.resize import resize_images
from medgen.datasets import TensorBundle
from medgen.metrics.auroc import auroc
from medgen.runtime import torch_threads
from medgen.text2image.caption_swaps import (
    SWAP_KINDS,
    ParsedCaption,
    caption_swaps,
    mirrored_caption,
    parse_caption,
)
from medgen.text2image.network import build_text_encoder
from medgen.text2image.tokenizer import PAD_ID, tokenize, tokenizer_from_json, tokenizer_info
from medgen.text2image.workflow import select, split_rows
from medgen.training import TrainingConfig, TrainingJob, TrainingTask, run_job

SECTION = "text2image.alignment"
#: The `AlignmentParams` that shape the network (`AlignmentScorer`'s ``model`` dict).
MODEL_KEYS = ("embed_dim", "image_width", "resolution", "text_hidden_size", "text_layers")
MODEL_KEYS += ("text_heads", "text_intermediate_size")
KIND = "text2image_alignment_scorer"
# A network this small runs many times slower with one thread per core on a loaded machine.
SCORER_THREADS = 1
# SigLIP starts at 10; here that left the captions "... left ..." and "... right ..." at text
# cosine 0.9997 after 300 steps: the towers only pull each other apart through the logits, so
# the gradients between them grow with the scale, and 10 was too small to leave that saddle on
# the real slices, whose lesions are small (30 did, at the same steps).
_INITIAL_SCALE = 30.0
_MAX_LOG_SCALE = math.log(100.0)  # CLIP's clamp: a larger scale only sharpens overfitting


@dataclass(frozen=True)
class AlignmentParams:
    """``params:`` block of the alignment scorer (values in conf/base; no defaults in code).

    embed_dim: width of the shared space. image_width: channels of the image tower's first
    residual unit (then 2x, 4x and 4x in the three stride-2 units). text_hidden_size, text_layers,
    text_heads, text_intermediate_size: the text encoder, as in `TextConditionedUNetConfig`.
    resolution: image side the towers see (32 or 64; slices are resized). steps, batch_size,
    lr (AdamW), seed (weights, batch order and the swapped captions drawn). swap_kinds: the
    `SWAP_KINDS` used as negatives (empty: in-batch shuffled negatives only). swap_weight: the
    share of the negative loss on swapped captions, in [0, 1]. mirror: every training slice
    also enters left-right mirrored with its caption's side swapped (a true pair: a mirror
    image swaps the hemispheres), which doubles the side examples and balances left and right.
    lesion_repeat: each training slice with metastases is listed this many times (most slices
    have none, and a scorer that sees few lesion captions as positives learns "a lesion caption
    is a mismatch" from the text alone).
    """

    embed_dim: int
    image_width: int
    text_hidden_size: int
    text_layers: int
    text_heads: int
    text_intermediate_size: int
    resolution: int
    steps: int
    batch_size: int
    lr: float
    seed: int
    swap_kinds: tuple[str, ...]
    swap_weight: float
    mirror: bool
    lesion_repeat: int

    def __post_init__(self) -> None:
        ints = ("embed_dim", "image_width", "text_hidden_size", "text_layers", "text_heads")
        ints += ("text_intermediate_size", "resolution", "steps", "batch_size", "lesion_repeat")
        require_positive_ints(self, SECTION, *ints)
        if self.text_hidden_size % self.text_heads:
            raise ValueError(f"{SECTION}.text_hidden_size must be divisible by text_heads")
        if self.resolution % 8:
            raise ValueError(f"{SECTION}.resolution must be a multiple of 8 (three stride-2 units)")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ValueError(f"{SECTION}.seed must be an integer, got {self.seed!r}")
        if not isinstance(self.lr, int | float) or not 0 < self.lr < math.inf:
            raise ValueError(f"{SECTION}.lr must be a number > 0, got {self.lr!r}")
        unknown = [k for k in self.swap_kinds if k not in SWAP_KINDS]
        if unknown or len(set(self.swap_kinds)) != len(self.swap_kinds):
            raise ValueError(f"{SECTION}.swap_kinds must be distinct of {list(SWAP_KINDS)}")
        if not isinstance(self.swap_weight, int | float) or not 0 <= self.swap_weight <= 1:
            raise ValueError(f"{SECTION}.swap_weight must be in [0, 1], got {self.swap_weight!r}")
        if not isinstance(self.mirror, bool):
            raise ValueError(f"{SECTION}.mirror must be true or false, got {self.mirror!r}")

    @classmethod
    def from_params(cls, params: Mapping[str, Any] | None) -> AlignmentParams:
        return config_tree_from_params(cls, params, SECTION)


class AlignmentScorer(nn.Module):
    """``forward(images [B, 1, S, S], tokens [T, L]) -> logits [B, T]`` of every pair;
    `pair_logits` scores image i with text i. Built by `build_alignment_scorer`."""

    def __init__(self, model: Mapping[str, Any], tokenizer_info: Mapping[str, int]) -> None:
        super().__init__()
        width, size = int(model["image_width"]), int(model["resolution"])
        self.resolution = size
        self.image_tower = Regressor(
            in_shape=(1, size, size),
            out_shape=(int(model["embed_dim"]),),
            channels=(width, 2 * width, 4 * width, 4 * width),
            strides=(1, 2, 2, 2),
            num_res_units=1,
        )
        self.text_encoder = build_text_encoder(
            tokenizer_info,
            hidden_size=int(model["text_hidden_size"]),
            intermediate_size=int(model["text_intermediate_size"]),
            layers=int(model["text_layers"]),
            heads=int(model["text_heads"]),
        )
        self.text_projection = nn.Linear(int(model["text_hidden_size"]), int(model["embed_dim"]))
        self.log_scale = nn.Parameter(torch.tensor(math.log(_INITIAL_SCALE)))
        self.bias = nn.Parameter(torch.zeros(()))

    def embed_images(self, images: torch.Tensor) -> torch.Tensor:
        images = resize_images(images, (self.resolution, self.resolution))
        return F.normalize(self.image_tower(images), dim=-1)

    def embed_texts(self, tokens: torch.Tensor) -> torch.Tensor:
        out = self.text_encoder(input_ids=tokens, attention_mask=(tokens != PAD_ID).long())
        return F.normalize(self.text_projection(out.pooler_output), dim=-1)

    def _logits(self, similarity: torch.Tensor) -> torch.Tensor:
        return self.log_scale.clamp(max=_MAX_LOG_SCALE).exp() * similarity + self.bias

    def forward(self, images: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        return self._logits(self.embed_images(images) @ self.embed_texts(tokens).T)

    def pair_logits(self, images: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        similarity = (self.embed_images(images) * self.embed_texts(tokens)).sum(-1)
        return self._logits(similarity)


def build_alignment_scorer(
    model: Mapping[str, Any], tokenizer_info: Mapping[str, int], seed: int
) -> AlignmentScorer:
    torch.manual_seed(seed)  # the same initial weights on every rank and every re-run
    return AlignmentScorer(model, tokenizer_info)


class CaptionedImages(Dataset):
    """Items ``{image, tokens [L], swap_tokens [K, L], swap_valid [K]}`` of a staged bundle."""

    def __init__(self, bundle: TensorBundle) -> None:
        self.keys = ("image", "tokens", "swap_tokens", "swap_valid")
        self.tensors = [bundle[k] for k in ("images", "tokens", "swap_tokens", "swap_valid")]

    def __len__(self) -> int:
        return len(self.tensors[0])

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {k: t[index] for k, t in zip(self.keys, self.tensors, strict=True)}


def sigmoid_pair_loss(
    model: nn.Module, batch: Mapping[str, torch.Tensor], *, swap_weight: float
) -> torch.Tensor:
    """The weighted SigLIP loss of the module docstring for one batch."""
    tokens, valid = batch["tokens"], batch["swap_valid"].bool()
    n, kinds = valid.shape
    owner = torch.arange(n, device=tokens.device).repeat_interleave(kinds)[valid.reshape(-1)]
    kind = torch.arange(kinds, device=tokens.device).repeat(n)[valid.reshape(-1)]
    swapped_tokens = batch["swap_tokens"].reshape(n * kinds, -1)[valid.reshape(-1)]
    # Most captions of a batch repeat ("... without visible metastases"): encode each once.
    texts, text_of = torch.unique(torch.cat([tokens, swapped_tokens]), dim=0, return_inverse=True)
    logits = model(batch["image"], texts)[:, text_of]
    pairs = logits[:, :n]
    same = text_of[:n, None] == text_of[None, :n]
    positive = F.softplus(-pairs[same]).mean()
    groups = []  # (weight, mean loss) of each negative group present in this batch
    if (~same).any():
        groups.append((1.0 - swap_weight, F.softplus(pairs[~same]).mean()))
    if len(owner):
        swap_loss = F.softplus(logits[owner, n + torch.arange(len(owner), device=owner.device)])
        per_kind = torch.stack([swap_loss[kind == k].mean() for k in kind.unique()])
        groups.append((swap_weight, per_kind.mean()))
    total = sum(w for w, _ in groups)
    if total > 0:
        negative = sum(w * loss for w, loss in groups) / total
    else:  # only a group of weight 0 here (swap_weight 1 and no swap applies), or none
        negative = torch.stack([loss for _, loss in groups]).mean() if groups else positive * 0
    return (positive + negative) / 2


def build_alignment_task(
    data: Mapping[str, TensorBundle],
    *,
    model: dict[str, Any],
    tokenizer_info: dict[str, int],
    swap_weight: float,
    seed: int,
) -> TrainingTask:
    """The alignment scorer's job factory: ``data["train"]`` holds ``images``, ``tokens``,
    ``swap_tokens`` [N, K, L] and ``swap_valid`` [N, K]."""
    return TrainingTask(
        model=build_alignment_scorer(model, tokenizer_info, seed),
        loss_fn=partial(sigmoid_pair_loss, swap_weight=swap_weight),
        train_data=CaptionedImages(data["train"]),
    )


def _check_images(images: Any, what: str) -> torch.Tensor:
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 1:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"{what}: images must be a tensor [N, 1, S, S] in [-1, 1], got {shape}")
    if images.shape[-1] != images.shape[-2]:
        raise ValueError(f"{what}: images must be square, got {tuple(images.shape[-2:])}")
    if not torch.isfinite(images).all():
        raise ValueError(f"{what}: images hold NaN or Inf values")
    return images.float()


def _check_prompts(prompts: Sequence[str], n_images: int, what: str) -> list[str]:
    if isinstance(prompts, str) or not isinstance(prompts, Sequence):
        raise TypeError(f"{what}: prompts must be a list of strings, one per image")
    if len(prompts) != n_images:
        raise ValueError(f"{what}: {n_images} images but {len(prompts)} prompts")
    empty = [i for i, p in enumerate(prompts) if not isinstance(p, str) or not p.strip()]
    if empty:
        raise ValueError(f"{what}: prompts {empty[:5]} are empty or not strings")
    return [str(p) for p in prompts]


def vocabulary_digest(tokenizer: Any) -> str:
    """Short SHA-1 of the tokenizer's word -> id map: a scorer only reads its own ids."""
    vocab = json.dumps(sorted(tokenizer.get_vocab().items()))
    return hashlib.sha1(vocab.encode()).hexdigest()[:16]


def _swap_tensors(
    captions: Sequence[str], kinds: Sequence[str], tokenizer: Any, seed: int
) -> tuple[torch.Tensor, torch.Tensor, dict[str, int], list[str]]:
    """Token ids [N, K, L] and validity [N, K] of one seeded swap per caption and kind."""
    parsed = [parse_caption(c) for c in captions]
    modalities = sorted({p.modality for p in parsed})
    findings = sorted({p.caption for p in parsed if p.description["n_metastases"]})
    rng = np.random.default_rng(seed)
    swaps = [
        caption_swaps(c, modalities=modalities, kinds=kinds, lesion_findings=findings, rng=rng)
        for c in captions
    ]
    texts = [s[k].caption if s[k] is not None else "" for s in swaps for k in kinds]
    length = tokenizer.model_max_length
    ids = tokenize(tokenizer, texts) if texts else torch.zeros(0, length, dtype=torch.long)
    valid = torch.tensor([[s[k] is not None for k in kinds] for s in swaps], dtype=torch.bool)
    counts = {k: int(valid[:, i].sum()) for i, k in enumerate(kinds)}
    ids = ids.reshape(len(captions), len(kinds), length)
    return ids, valid.reshape(-1, len(kinds)), counts, modalities


def _subjects(bundle: TensorBundle) -> list[str] | None:
    subjects = bundle.metadata.get("extra_columns", {}).get("subject")
    return None if subjects is None else [str(s) for s in subjects]


def train_alignment_scorer(
    captioned_bundle: TensorBundle,
    tokenizer_json: Mapping[str, Any],
    params: Mapping[str, Any] | AlignmentParams,
    checkpoint_dir: str | Path | None,
) -> tuple[TensorBundle, dict[str, Any]]:
    """Train the scorer on the ``split == train`` rows (every row without a split column) of
    a `CSVImageDataset` bundle; return its weights + config as a `TensorBundle` and a report
    (items, swaps per kind, loss, steps, seconds)."""
    config = params if isinstance(params, AlignmentParams) else AlignmentParams.from_params(params)
    train = select(captioned_bundle, split_rows(captioned_bundle, "train"))
    images = _check_images(train.tensors.get("images"), "alignment scorer training slices")
    captions = _check_prompts(train.metadata.get("texts") or [], len(images), "training captions")
    if not len(images):
        raise ValueError("alignment scorer: the bundle holds no training slices")
    tokenizer = tokenizer_from_json(tokenizer_json)
    info = tokenizer_info(tokenizer)
    n_slices = len(images)
    lesion = [parse_caption(c).description["n_metastases"] > 0 for c in captions]
    rows = [i for i, has in enumerate(lesion) for _ in range(config.lesion_repeat if has else 1)]
    images, captions = images[torch.as_tensor(rows)], [captions[i] for i in rows]
    if config.mirror:  # a mirror image swaps the hemispheres, whatever the display convention
        images = torch.cat([images, images.flip(-1)])
        captions = captions + [mirrored_caption(c) for c in captions]
    swap_ids, swap_valid, swap_counts, modalities = _swap_tensors(
        captions, config.swap_kinds, tokenizer, config.seed
    )
    model = {k: getattr(config, k) for k in MODEL_KEYS}
    data = {
        "images": resize_images(images, (config.resolution,) * 2).contiguous(),
        "tokens": tokenize(tokenizer, captions),
        "swap_tokens": swap_ids.contiguous(),
        "swap_valid": swap_valid.contiguous(),
    }
    job = TrainingJob(
        name="alignment_scorer",
        factory=build_alignment_task,
        config=TrainingConfig(
            max_steps=config.steps,
            batch_size=config.batch_size,
            lr=config.lr,
            weight_decay=1e-4,
            warmup_steps=config.steps // 10,
            min_lr_ratio=0.1,
            max_grad_norm=1.0,
            log_every=max(1, config.steps // 10),
            seed=config.seed,
            progress=False,
            device="cpu",
        ),
        checkpoint_dir=checkpoint_dir,
        data={"train": TensorBundle(data)},
        options={
            "model": model,
            "tokenizer_info": info,
            "swap_weight": float(config.swap_weight),
            "seed": config.seed,
        },
        artifact_path="text2image/alignment_scorer",
        torch_threads=SCORER_THREADS,
    )
    cpu_start = time.process_time()
    outcome = run_job(job)
    cpu_seconds = time.process_time() - cpu_start
    losses = [r["loss"] for r in outcome.result.history if r["kind"] == "step"]
    subjects = _subjects(train)
    metadata = {
        "kind": KIND,
        "model": model,
        "tokenizer_info": info,
        "tokenizer_vocabulary": vocabulary_digest(tokenizer),
        "swap_kinds": list(config.swap_kinds),
        "swap_modalities": modalities,
        "train_subjects": sorted(set(subjects)) if subjects is not None else None,
        "n_train": n_slices,
        "params": config_to_dict(config),
    }
    report = {
        "n_train": n_slices,
        "n_train_items": len(images),
        "n_train_subjects": len(set(subjects)) if subjects is not None else None,
        "swaps_per_kind": swap_counts,
        "swap_weight": config.swap_weight,
        "loss": "SigLIP pairwise sigmoid, positives and negatives weighted equally",
        "steps": outcome.result.steps,
        "loss_first": losses[0] if losses else None,
        "loss_last": losses[-1] if losses else None,
        "seconds": round(outcome.seconds, 2),
        # this process's CPU time (training runs here): on a shared machine, wall time also
        # counts other programs' turns on the cores
        "cpu_seconds": round(cpu_seconds, 2),
        "skipped": outcome.skipped,
    }
    return TensorBundle(dict(outcome.result.model_state), metadata), report


def load_alignment_scorer(bundle: TensorBundle) -> AlignmentScorer:
    """The trained scorer (eval mode) from `train_alignment_scorer`'s bundle."""
    meta = bundle.metadata
    if meta.get("kind") != KIND:
        raise ValueError(
            f"not an alignment scorer bundle (metadata kind {meta.get('kind')!r}); it is made "
            "by train_alignment_scorer"
        )
    scorer = AlignmentScorer(meta["model"], meta["tokenizer_info"])
    scorer.load_state_dict(bundle.tensors)
    return scorer.eval()


@torch.no_grad()
def alignment_scores(
    scorer_bundle: TensorBundle,
    tokenizer_json: Mapping[str, Any],
    images: torch.Tensor,
    prompts: Sequence[str],
    batch_size: int = 256,
) -> torch.Tensor:
    """Match probability [N] in [0, 1] of image i [N, 1, S, S] (in [-1, 1], any square
    size) with prompt i: the reward and the best-of-N ranking of text2image_rlhf."""
    images = _check_images(images, "images to score")
    prompts = _check_prompts(prompts, len(images), "alignment_scores")
    scorer = load_alignment_scorer(scorer_bundle)
    tokenizer = tokenizer_from_json(tokenizer_json)
    if vocabulary_digest(tokenizer) != scorer_bundle.metadata["tokenizer_vocabulary"]:
        raise ValueError(
            "alignment_scores: the tokenizer is not the one the scorer was trained with "
            "(different vocabulary); pass the text2image.tokenizer of the same run"
        )
    tokens = tokenize(tokenizer, prompts)
    out = []
    with torch_threads(SCORER_THREADS):
        for start in range(0, len(images), batch_size):
            part = slice(start, start + batch_size)
            out.append(torch.sigmoid(scorer.pair_logits(images[part], tokens[part])))
    return torch.cat(out) if out else torch.zeros(0)


def shuffle_captions(bundle: TensorBundle, seed: int) -> TensorBundle:
    """The negative control's data: the captions (and their caption-table columns and
    modalities) permuted among the rows of each split; images, split and subject stay."""
    meta = dict(bundle.metadata)
    columns = dict(meta.get("extra_columns") or {})
    splits = columns.get("split") or ["all"] * len(bundle)
    rng = np.random.default_rng(seed)
    order = np.arange(len(bundle))
    for split in sorted(set(map(str, splits))):
        rows = np.flatnonzero(np.asarray(list(map(str, splits))) == split)
        order[rows] = rows[rng.permutation(len(rows))]
    moved = ("texts", "modalities")
    for key in moved:
        if key in meta:
            meta[key] = [meta[key][i] for i in order]
    meta["extra_columns"] = {
        k: v if k in ("split", "subject", "slice_index") else [v[i] for i in order]
        for k, v in columns.items()
    }
    return TensorBundle(dict(bundle.tensors), meta)


def _comparison(matched: np.ndarray, other: np.ndarray, paired: bool) -> dict[str, Any]:
    """AUROC of ``matched`` over ``other`` with its counts and its spread under chance."""
    if not len(matched) or not len(other):
        return {"status": "failed", "reason": "no held-out caption of this kind to compare"}
    value, method = auroc(matched, other)
    n_pos, n_neg = len(matched), len(other)
    entry = {
        "auroc": value,
        "n_matched": n_pos,
        "n_negative": n_neg,
        # the AUROC's standard deviation when scores do not depend on the match (H0, no ties)
        "chance_sd": math.sqrt((n_pos + n_neg + 1) / (12 * n_pos * n_neg)),
        "mean_matched": float(np.mean(matched)),
        "mean_negative": float(np.mean(other)),
        "method": method,
    }
    if paired:  # the same image with its caption and with the negative one
        entry["paired_win_rate"] = float(np.mean((matched > other) + 0.5 * (matched == other)))
    return entry


def _source(parsed: ParsedCaption, kind: str) -> str:
    """The value a swap of ``kind`` changes, as the caption states it."""
    description = parsed.description
    return {
        "modality": parsed.modality,
        "side": str(description["side"]),
        "lesion_present": "present" if description["n_metastases"] else "absent",
        "count": str(description["n_metastases"]),
    }[kind]


def _by_source(matched: np.ndarray, swapped: np.ndarray, sources: np.ndarray) -> dict[str, Any]:
    """AUROC within each stated value (e.g. lesion "absent" -> swapped to present, "present"
    -> swapped to absent) and their mean, ``balanced_auroc``: a scorer that reads only the
    caption and prefers the commoner sentence wins one direction and loses the other, so it
    lands near 0.5 there however unbalanced the classes are, while the pooled AUROC rewards
    it by the majority class's share (86 % of the held-out slices have no lesion)."""
    by_source = {}
    for value in sorted(set(sources)):
        rows = sources == value
        by_source[value] = {"n": int(rows.sum()), "auroc": auroc(matched[rows], swapped[rows])[0]}
    variances = [(2 * v["n"] + 1) / (12 * v["n"] ** 2) for v in by_source.values()]
    return {
        "by_source": by_source,
        "balanced_auroc": float(np.mean([v["auroc"] for v in by_source.values()])),
        "balanced_chance_sd": math.sqrt(sum(variances)) / len(variances),
    }


def evaluate_scores(
    captions: Sequence[str],
    score: Any,
    *,
    modalities: Sequence[str],
    seed: int,
) -> dict[str, Any]:
    """The comparisons of `evaluate_alignment`; ``score(texts, rows)`` scores image
    ``rows[i]`` with ``texts[i]``. One seeded swap per caption and kind (lesion findings of
    the presence swap drawn from these captions), one random caption that differs from the
    image's own for the shuffled comparison."""
    rng = np.random.default_rng(seed)
    parsed = [parse_caption(c) for c in captions]
    modalities = sorted({*modalities, *(p.modality for p in parsed)})
    findings = sorted({p.caption for p in parsed if p.description["n_metastases"]})
    rows = np.arange(len(captions))
    matched = score(list(captions), rows)
    swaps = [
        caption_swaps(c, modalities=modalities, lesion_findings=findings or None, rng=rng)
        for c in captions
    ]
    report: dict[str, Any] = {
        "n_images": len(captions),
        "mean_matched": float(matched.mean()) if len(matched) else None,
        "swapped": {},
    }
    pooled = []
    for kind in SWAP_KINDS:
        applies = np.array([s[kind] is not None for s in swaps], dtype=bool)
        texts = [s[kind].caption for s in swaps if s[kind] is not None]
        swapped = score(texts, rows[applies]) if texts else np.zeros(0)
        pooled.append(swapped)
        entry = _comparison(matched[applies], swapped, paired=True)
        if "auroc" in entry:
            sources = np.array([_source(p, kind) for p in parsed], dtype=object)[applies]
            entry.update(_by_source(matched[applies], swapped, sources))
        report["swapped"][kind] = entry
    report["swapped_overall"] = _comparison(matched, np.concatenate(pooled), paired=False)
    text = np.asarray(captions, dtype=object)
    chosen, other = [], []
    for i in rows:
        candidates = np.flatnonzero(text != text[i])
        if len(candidates):
            chosen.append(i)
            other.append(str(text[rng.choice(candidates)]))
    shuffled = score(other, np.asarray(chosen, dtype=np.int64)) if other else np.zeros(0)
    report["shuffled"] = _comparison(matched[chosen], shuffled, paired=True)
    return report


def evaluate_alignment(
    scorer_bundle: TensorBundle,
    tokenizer_json: Mapping[str, Any],
    captioned_bundle: TensorBundle,
    *,
    splits: Sequence[str] | None = ("val", "test"),
    seed: int = 0,
) -> dict[str, Any]:
    """Held-out-patient AUROC of matched vs attribute-swapped captions (per kind and all
    kinds together) and of matched vs shuffled captions, on the rows of ``splits`` (None: the
    whole bundle is held out). Raises when a held-out subject was a training subject."""
    if splits is None:
        heldout = captioned_bundle
    else:
        if "split" not in captioned_bundle.metadata.get("extra_columns", {}):
            raise ValueError("evaluate_alignment: the bundle has no split column (splits=None?)")
        rows = sorted(i for s in splits for i in split_rows(captioned_bundle, s))
        heldout = select(captioned_bundle, rows)
    images = _check_images(heldout.tensors.get("images"), "held-out slices")
    captions = _check_prompts(heldout.metadata.get("texts") or [], len(images), "held-out")
    meta = scorer_bundle.metadata
    subjects, trained_on = _subjects(heldout), meta.get("train_subjects")
    if subjects is not None and trained_on is not None:
        overlap = sorted(set(subjects) & set(trained_on))
        if overlap:
            raise ValueError(f"evaluate_alignment: held-out subjects {overlap[:5]} were trained on")

    def score(texts: Sequence[str], rows: Sequence[int]) -> np.ndarray:
        index = torch.as_tensor(list(rows), dtype=torch.long)
        return alignment_scores(scorer_bundle, tokenizer_json, images[index], texts).numpy()

    report = evaluate_scores(
        captions, score, modalities=meta.get("swap_modalities") or [], seed=seed
    )
    report["scorer"] = {
        "name": "image-text dual encoder, SigLIP sigmoid loss",
        "trained_on": "real training slices and their captions",
        "n_train": meta.get("n_train"),
        "swap_kinds_trained": meta.get("swap_kinds"),
        "chance": "AUROC 0.5 (chance_sd per entry); compare a scorer trained on shuffle_captions",
    }
    report["n_subjects"] = len(set(subjects)) if subjects is not None else None
    report["held_out_patients"] = "checked" if subjects and trained_on else "unknown"
    report["splits"] = list(splits) if splits is not None else None
    return report
