"""The Selector: a learned image-quality reward model, trained from expert ratings.

A small Vision Transformer (`transformers.ViTModel` from a `ViTConfig`, one channel; or a
pretrained ViT from a HuggingFace id or local folder, read with ``local_files_only``) with a
linear head on the [CLS] token; ``score = sigmoid(logit)`` in [0, 1] is P(rating >= 2).

Training (one `medgen.training` job): binary cross-entropy on ``rating >= 2`` per rating row,
with the rater's expert level as the row's WEIGHT: a senior's rating counts more, a junior's
low rating still counts (the published code multiplied ratings by the level and clipped them to
[1, 3], which turned junior 1s into 2s and 3s). Evaluation on held-out patients only: AUROC
against the ratings and against the oracle quality (which the Selector never saw), expected
calibration error with a reliability plot, and the mean score of rating-1 images before and
after training.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset
from transformers import ViTConfig, ViTModel

from medgen.config import config_to_dict, config_tree_from_params, require_positive_ints
from medgen.data.resize import resize_images
from medgen.datasets import TensorBundle
from medgen.metrics.auroc import auroc
from medgen.metrics.images import figure_image, new_figure
from medgen.runtime import torch_threads
from medgen.text2image.workflow import split_rows
from medgen.training import TrainingConfig, TrainingJob, TrainingTask, run_job

KIND = "text2image_selector"
SMALL_MODEL_THREADS = 1  # a model this small runs slower with one thread per core on a busy CPU


@dataclass(frozen=True)
class SelectorParams:
    """``text2image.selector``: the ViT (``hidden_size``, ``layers``, ``heads``,
    ``intermediate_size``, ``patch_size``) at ``resolution``; ``pretrained`` (null, a HF id or a
    local folder); training ``steps``, ``batch_size``, ``lr``, ``seed``; ``good_rating`` (2);
    ``oracle_good`` (the oracle quality that counts as good for the oracle AUROC);
    ``calibration_bins``; ``shuffled_controls`` (how many times the same recipe is also
    trained on permuted labels, 0: never). One control is not a chance line: the rated pool
    falls into a few clusters (clean, each degradation, the under-trained generator), a
    permutation gives each cluster a label rate off the overall one by chance, and a model
    that learns those rates ranks held-out clusters away from 0.5 in a random direction (one
    demo control read 0.29, another 0.60). The mean over several permutations is the chance
    line and their spread its width."""

    hidden_size: int
    layers: int
    heads: int
    intermediate_size: int
    patch_size: int
    resolution: int
    pretrained: str | None
    steps: int
    batch_size: int
    lr: float
    seed: int
    good_rating: int
    oracle_good: float
    calibration_bins: int
    shuffled_controls: int

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> SelectorParams:
        config = config_tree_from_params(cls, params, "text2image.selector")
        require_positive_ints(
            config, "text2image.selector", "hidden_size", "layers", "heads", "patch_size",
            "resolution", "steps", "batch_size", "calibration_bins",
        )  # fmt: skip
        if config.resolution % config.patch_size:
            raise ValueError("text2image.selector.resolution must be a multiple of patch_size")
        return config


class QualitySelector(nn.Module):
    """[B, 1, S, S] in [-1, 1] -> quality logits [B]."""

    def __init__(self, architecture: Mapping[str, Any]) -> None:
        super().__init__()
        pretrained = architecture.get("pretrained")
        if pretrained:
            self.vit = load_pretrained_vit(str(pretrained))
        else:
            self.vit = ViTModel(
                ViTConfig(
                    image_size=architecture["resolution"],
                    patch_size=architecture["patch_size"],
                    num_channels=1,
                    hidden_size=architecture["hidden_size"],
                    num_hidden_layers=architecture["layers"],
                    num_attention_heads=architecture["heads"],
                    intermediate_size=architecture["intermediate_size"],
                ),
                add_pooling_layer=False,
            )
        self.size = int(self.vit.config.image_size)
        self.channels = int(self.vit.config.num_channels)
        self.head = nn.Linear(self.vit.config.hidden_size, 1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.shape[-1] != self.size:
            images = resize_images(images, (self.size, self.size))
        if self.channels != images.shape[1]:
            images = images.expand(-1, self.channels, -1, -1)
        hidden = self.vit(pixel_values=images).last_hidden_state[:, 0]
        return self.head(hidden).squeeze(1)


def load_pretrained_vit(source: str) -> ViTModel:
    """A pretrained ViT from a local folder or a HF id already in the cache (never downloaded)."""
    try:
        return ViTModel.from_pretrained(source, local_files_only=True, add_pooling_layer=False)
    except OSError as exc:
        raise FileNotFoundError(
            f"text2image.selector.pretrained: no ViT weights for {source!r} on this machine. Put "
            "a transformers ViT folder (config.json + model.safetensors) at that path, or the "
            "model in the HuggingFace cache (HF_HOME, `huggingface-cli download "
            f"{source}` on a machine with internet), or set pretrained: null to train the "
            "small ViT from scratch"
        ) from exc


class RatedImages(Dataset):
    """Items ``{images, label, weight}`` of a staged bundle (one per rating row)."""

    def __init__(self, bundle: TensorBundle) -> None:
        self.images = bundle["images"].float()
        self.labels = bundle["labels"].float()
        self.weights = bundle["weights"].float()

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {
            "images": self.images[index],
            "label": self.labels[index],
            "weight": self.weights[index],
        }


def weighted_bce(logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Σ w·BCE / Σ w: the expert level weighs a row; a weight-0 row has no effect."""
    losses = F.binary_cross_entropy_with_logits(logits, labels, reduction="none")
    return (weights * losses).sum() / weights.sum().clamp(min=1e-8)


def _selector_loss(model: nn.Module, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
    return weighted_bce(model(batch["images"]), batch["label"], batch["weight"])


def build_selector_task(
    data: Mapping[str, TensorBundle], *, architecture: dict[str, Any], seed: int
) -> TrainingTask:
    """The job's factory, run in every worker."""
    torch.manual_seed(seed)
    return TrainingTask(
        model=QualitySelector(architecture), loss_fn=_selector_loss,
        train_data=RatedImages(data["train"]),
    )  # fmt: skip


def _architecture(params: SelectorParams) -> dict[str, Any]:
    keys = ("hidden_size", "layers", "heads", "intermediate_size", "patch_size", "resolution")
    return {**{k: getattr(params, k) for k in keys}, "pretrained": params.pretrained}


def train_selector_model(
    images: torch.Tensor,
    labels: torch.Tensor,
    weights: torch.Tensor,
    params: SelectorParams,
    checkpoint_dir: str | Path | None,
    name: str = "text2image_selector",
) -> tuple[TensorBundle, float]:
    """Train on rating rows; the selector bundle and the training seconds."""
    architecture = _architecture(params)
    config = TrainingConfig.from_dict(
        {
            "max_steps": params.steps,
            "batch_size": min(params.batch_size, len(images)),
            "lr": params.lr,
            "warmup_steps": min(20, params.steps // 10),
            "min_lr_ratio": 0.1,
            "seed": params.seed,
            "log_every": max(1, params.steps // 5),
            "progress": False,
        }  # fmt: skip
    )
    job = TrainingJob(
        name=name,
        factory=build_selector_task,
        config=config,
        checkpoint_dir=checkpoint_dir,
        data={"train": TensorBundle({"images": images, "labels": labels, "weights": weights})},
        options={"architecture": architecture, "seed": params.seed},
        torch_threads=SMALL_MODEL_THREADS,
        artifact_path=name.replace("text2image_", "text2image/"),
    )
    outcome = run_job(job)
    meta = {"kind": KIND, "architecture": architecture, "params": config_to_dict(params)}
    return TensorBundle(dict(outcome.result.model_state), meta), outcome.seconds


def load_selector(bundle: TensorBundle) -> QualitySelector:
    if bundle.metadata.get("kind") != KIND:
        raise ValueError(
            f"not a Selector bundle (metadata kind {bundle.metadata.get('kind')!r}): it is "
            "made by the text2image train_selector node"
        )
    model = QualitySelector(bundle.metadata["architecture"])
    model.load_state_dict(bundle.tensors)
    return model.eval()


@torch.no_grad()
def score_images(selector: TensorBundle | QualitySelector, images: torch.Tensor) -> torch.Tensor:
    """Quality scores [N] in [0, 1] of images [N, 1, S, S] in [-1, 1]."""
    if images.ndim != 4 or images.shape[1] != 1:
        raise ValueError(f"the Selector scores images [N, 1, S, S], got {tuple(images.shape)}")
    if not torch.isfinite(images).all():
        raise ValueError("the Selector got non-finite images")
    model = selector if isinstance(selector, nn.Module) else load_selector(selector)
    with torch_threads(SMALL_MODEL_THREADS):
        out = [torch.sigmoid(model(chunk.float())) for chunk in images.split(256)]
    return torch.cat(out) if out else torch.zeros(0)


def expected_calibration_error(
    scores: np.ndarray, labels: np.ndarray, bins: int
) -> tuple[float, list[dict[str, float]]]:
    """ECE with ``bins`` equal-width bins: Σ_b (n_b / n)·|mean label_b − mean score_b|."""
    scores, labels = np.asarray(scores, float), np.asarray(labels, float)
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.clip(np.digitize(scores, edges[1:-1]), 0, bins - 1)
    ece, table = 0.0, []
    for b in range(bins):
        members = index == b
        if not members.any():
            continue
        confidence, accuracy = scores[members].mean(), labels[members].mean()
        ece += members.mean() * abs(accuracy - confidence)
        table.append({"bin": b, "n": int(members.sum()), "score": float(confidence),
                      "fraction_good": float(accuracy)})  # fmt: skip
    return float(ece), table


def reliability_plot(table: Sequence[Mapping[str, float]], ece: float, title: str) -> Any:
    fig = new_figure(figsize=(3.6, 3.4))
    ax = fig.add_subplot(1, 1, 1)
    ax.plot([0, 1], [0, 1], color="0.6", linestyle="--", linewidth=1, label="calibrated")
    xs = [row["score"] for row in table]
    ys = [row["fraction_good"] for row in table]
    sizes = [12 + 4 * math.sqrt(row["n"]) for row in table]
    ax.scatter(xs, ys, s=sizes, color="tab:blue", zorder=3, label="held-out bins")
    ax.plot(xs, ys, color="tab:blue", linewidth=1)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("Selector score")
    ax.set_ylabel("fraction rated >= 2")
    ax.set_title(f"{title}\nECE {ece:.3f}", fontsize=8)
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    return figure_image(fig, dpi=110, tight=False)


def _auroc_entry(scores: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    positive, negative = scores[labels], scores[~labels]
    if not len(positive) or not len(negative):
        return {"status": "failed", "reason": "held-out rows hold only one class", "n": len(scores)}
    value, method = auroc(positive, negative)
    n_pos, n_neg = len(positive), len(negative)
    return {
        "auroc": round(float(value), 4),
        "n_positive": n_pos,
        "n_negative": n_neg,
        "chance_sd": round(math.sqrt((n_pos + n_neg + 1) / (12 * n_pos * n_neg)), 4),
        "method": method,
    }


def rating_arrays(rated: TensorBundle, params: SelectorParams) -> dict[str, np.ndarray]:
    extra = rated.metadata.get("extra_columns", {})
    arrays = {
        "rating": np.asarray([float(v) for v in extra["rating"]]),
        "level": np.asarray([float(v) for v in extra["expert_level"]]),
    }
    if "oracle_quality" in extra:
        arrays["oracle"] = np.asarray([float(v) for v in extra["oracle_quality"]])
    arrays["good"] = arrays["rating"] >= params.good_rating
    return arrays


def train_and_evaluate_selector(
    rated: TensorBundle, params: SelectorParams, checkpoint_dir: str | Path
) -> tuple[TensorBundle, dict[str, Any], Any]:
    """Train on the training patients' rows, evaluate on the others; bundle, report, plot."""
    train_rows = split_rows(rated, "train")
    test_rows = sorted(set(range(len(rated["images"]))) - set(train_rows))
    if not train_rows or not test_rows:
        raise ValueError(
            f"text2image.selector: {len(train_rows)} training and {len(test_rows)} held-out "
            "rating rows; both are needed (a split column with train and val/test patients)"
        )
    arrays = rating_arrays(rated, params)
    images = rated["images"].float()
    train_images = images[train_rows]
    labels = torch.as_tensor(arrays["good"][train_rows], dtype=torch.float32)
    weights = torch.as_tensor(arrays["level"][train_rows], dtype=torch.float32)
    untrained = TensorBundle(
        QualitySelector(_architecture(params)).state_dict(),
        {"kind": KIND, "architecture": _architecture(params)},
    )
    selector, seconds = train_selector_model(
        train_images, labels, weights, params, Path(checkpoint_dir)
    )
    report = evaluate_selector(selector, rated, test_rows, arrays, params)
    report["before_training"] = evaluate_selector(untrained, rated, test_rows, arrays, params)
    report["training"] = {
        "rows": len(train_rows), "heldout_rows": len(test_rows), "seconds": round(seconds, 1),
        "weights": "expert level per rating row (BCE sample weight)",
    }  # fmt: skip
    controls = []
    for k in range(params.shuffled_controls):
        order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(1 + k))
        control, _ = train_selector_model(
            train_images, labels[order], weights, params,
            Path(checkpoint_dir).with_name(f"selector_control_{k}"),
            name="text2image_selector_control",
        )  # fmt: skip
        controls.append(evaluate_selector(control, rated, test_rows, arrays, params))
    if controls:
        aurocs = [c["heldout"]["vs_ratings"].get("auroc") for c in controls]
        report["shuffled_label_control"] = controls[0]
        report["shuffled_label_controls"] = {
            "n": len(controls),
            "vs_ratings_aurocs": aurocs,
            "mean": round(float(np.mean(aurocs)), 4),
            "sd": round(float(np.std(aurocs, ddof=1)), 4) if len(aurocs) > 1 else None,
        }
    report["headline"] = {
        "vs_ratings": report["heldout"]["vs_ratings"].get("auroc"),
        "vs_oracle": report["heldout"].get("vs_oracle", {}).get("auroc"),
        "ece": report["heldout"]["ece"],
        "shuffled_control_vs_ratings": report.get("shuffled_label_controls", {}).get("mean"),
        "shuffled_controls_sd": report.get("shuffled_label_controls", {}).get("sd"),
        # the untrained network's AUROC: a recipe that learns nothing keeps its random start's
        # response to noise and blur, so the shuffled control is read against this, not 0.5
        "untrained_vs_ratings": report["before_training"]["heldout"]["vs_ratings"].get("auroc"),
        "rating1_mean_score_before": report["before_training"]["heldout"]["rating1_mean_score"],
        "rating1_mean_score_after": report["heldout"]["rating1_mean_score"],
    }
    plot = reliability_plot(
        report["heldout"]["reliability"], report["heldout"]["ece"], "Selector, held-out patients"
    )
    return selector, report, plot


def evaluate_selector(
    selector: TensorBundle,
    rated: TensorBundle,
    rows: Sequence[int],
    arrays: Mapping[str, np.ndarray],
    params: SelectorParams,
) -> dict[str, Any]:
    """AUROC vs ratings (per row) and vs the oracle (per image), ECE, rating-1 mean score."""
    scores = score_images(selector, rated["images"][list(rows)]).numpy().astype(float)
    good = arrays["good"][list(rows)]
    ece, table = expected_calibration_error(scores, good, params.calibration_bins)
    ratings = arrays["rating"][list(rows)]
    out: dict[str, Any] = {
        "vs_ratings": _auroc_entry(scores, good),
        "ece": round(ece, 4),
        "reliability": table,
        "rating1_mean_score": round(float(scores[ratings == 1].mean()), 4)
        if (ratings == 1).any()
        else None,
        "mean_score": round(float(scores.mean()), 4),
    }
    if "oracle" in arrays:
        paths = [rated.metadata["paths"][i] for i in rows]
        first = {p: j for j, p in reversed(list(enumerate(paths)))}  # one row per image
        unique = np.asarray(sorted(first.values()))
        oracle_good = arrays["oracle"][list(rows)][unique] >= params.oracle_good
        out["vs_oracle"] = _auroc_entry(scores[unique], oracle_good)
        out["vs_oracle"]["unit"] = "image"
    return {"heldout": out}
