"""Does a generated image show what its prompt asks for? Offline attribute classifiers.

Three attributes of a captioned axial slice are judged by a small CNN trained on the REAL
TRAINING slices only (one `medgen.training.TrainingJob`; nothing is downloaded):

* ``modality``: which of the training set's modalities (multi-class);
* ``lesion_present``: at least one visible metastasis (``n_metastases > 0``);
* ``side``: the hemisphere of the largest metastasis, left or right (neurological view:
  the subject's left is on the image's left); trained and scored on lesion slices only.

`attribute_agreement` reports, per attribute,

* ``real``: the classifier's accuracy and balanced accuracy (mean per-class recall) on REAL
  HELD-OUT slices against their caption-table labels: how far the judge can be trusted;
* ``generated``: the *agreement* between the classifier's prediction on each GENERATED
  image and the attribute its PROMPT asked for (parsed with `attributes_from_prompt`);
* for both: counts (``n``, ``n_per_class``), a confusion matrix (rows true / requested
  class, columns predicted class), and the baselines a constant guess gets on the same
  items: ``majority_baseline`` (the majority class's share; any constant guess reaches at
  most this accuracy) and ``balanced_chance`` (1 / classes present, the balanced accuracy
  of every constant guess).

How to read the numbers, and their limits:

* The judge is a classifier trained on real slices judging synthetic ones. Its errors on
  real slices carry over, so generated agreement is bounded by (about) its real accuracy:
  generated agreement close to real accuracy means the generator follows the prompt as
  well as this judge can tell; it is not proof that a radiologist would agree.
* Synthetic images are out of the judge's training distribution: it may read artefacts as
  lesions or rely on intensity statistics the generator reproduces without anatomy.
  Agreement measures "the judge's reading matches the prompt", not realism (FID's job).
* ``side`` is scored only where the prompt (or the real caption) states a lesion, whatever
  the judge thinks about lesion presence; a generated image without any lesion still gets
  a left/right guess there, which on average is right half the time.
* Numbers at or near the majority baseline mean the attribute is not shown (or not read);
  with few items per class (see ``n_per_class``) differences of a few points are noise.

Design (documented choices): one shared trunk with one linear head per attribute, trained
in ONE job: the side head needs a lesion detector, which the trunk learns from every slice
through the lesion head, while lesion slices alone (the only ones with a side label) are
few. The trunk keeps a coarse 4 x 4 map before the heads (no global average pool, which
would discard where the lesion is), and there is no flip augmentation (it would swap
sides). Class imbalance (most slices have no lesion) is handled with class-balanced loss
weights (``n / (K * n_class)`` over each attribute's training items, computed by the factory
from the staged labels), not balanced sampling: the engine's resumable sampler is one
shuffle shared by the three heads, and one sampler could not balance three label sets at
once. An attribute whose training items hold fewer than two classes is not trained and is
reported ``failed`` with its reason.

Size: one contract in one place: the prompt parser, the real slices' labels, the network and
its training job, and the scoring share the class lists and the `NOT_APPLICABLE` encoding
that decide which items count for which attribute.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from medgen.config import config_to_dict, config_tree_from_params, require_positive_ints
from medgen.datasets import TensorBundle
from medgen.metrics.in_domain import LabelledImages
from medgen.runtime import torch_threads
from medgen.text2image.slice_captions import SHORT_MODALITY_NAMES
from medgen.training import TrainingConfig, TrainingJob, TrainingTask, run_job

ATTRIBUTES = ("modality", "lesion_present", "side")
LESION_CLASSES = ("absent", "present")
SIDE_CLASSES = ("left", "right")
SECTION = "text2image.attribute_classifiers"
KIND = "text2image_attribute_classifiers"
# A network this small gains nothing from more intra-op threads and, on a loaded machine,
# runs many times slower with one per core (oversubscription): training and prediction use 1.
SMALL_MODEL_THREADS = 1
NOT_APPLICABLE = -1  # the label of an item an attribute does not apply to (side without lesion)
_GRID = 4  # the trunk's output map, so the heads still see left from right
_MODALITY_BY_NAME = {name: key for key, name in SHORT_MODALITY_NAMES.items()}
_PROMPT = re.compile(r"Brain MRI, (?P<name>.+): (?P<finding>[^:]+)")
_LOCATION = r"the (?P<side>left|right) (?:hemisphere|cerebellum|[a-z]+ lobe)"
_FINDINGS = (
    re.compile(r"without visible metastases"),
    re.compile(rf"1 metastasis of \d+ mm in {_LOCATION}"),
    re.compile(rf"(?:[2-9]|[1-9]\d+) metastases; largest \d+ mm in {_LOCATION}"),
)


def attributes_from_prompt(prompt: str) -> dict[str, Any]:
    """``{modality, lesion_present, side}`` of a `slice_caption` prompt (its exact inverse).

    The modality is the key of `SHORT_MODALITY_NAMES` ("FLAIR" -> ``flair``), or the name
    itself for a modality outside it (as `slice_caption` writes it); ``side`` is None
    without a metastasis. Raises ValueError naming a prompt of any other form.
    """
    whole = _PROMPT.fullmatch(str(prompt).strip())
    found = whole and next((m for p in _FINDINGS if (m := p.fullmatch(whole["finding"]))), None)
    if not found:
        raise ValueError(
            f"cannot read the attributes of prompt {prompt!r}: expected the slice_caption form "
            "'Brain MRI, <modality>: without visible metastases' or '... : <n> metastases; "
            "largest <d> mm in the <left|right> <place>'"
        )
    side = found.groupdict().get("side")
    return {
        "modality": _MODALITY_BY_NAME.get(whole["name"], whole["name"]),
        "lesion_present": side is not None,
        "side": side,
    }


def _item_name(bundle: TensorBundle, item: int) -> str:
    if "row_index" in bundle.tensors:
        return f"CSV row {int(bundle['row_index'][item])}"
    return f"item {item}"


def _metastasis_count(value: Any, where: str) -> int:
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if not math.isfinite(number) or number < 0 or number != int(number):
        raise ValueError(f"{where}: n_metastases must be a count >= 0, got {value!r}")
    return int(number)


def real_attributes(bundle: TensorBundle) -> list[dict[str, Any]]:
    """Per slice ``{modality, lesion_present, side}``, from a `CSVImageDataset` bundle.

    The modality comes from ``metadata["modalities"]`` (the CSV's modality column), lesion
    and side from the caption table's ``n_metastases`` and ``side`` columns
    (``metadata["extra_columns"]``, written by `export.export_captioned_slices`: strings, the
    side empty without a lesion); a bundle without those columns is read from its prompts
    (``metadata["texts"]``) with `attributes_from_prompt`.
    """
    meta, n = bundle.metadata, len(bundle)
    columns = meta.get("extra_columns") or {}
    modalities = meta.get("modalities")
    if "n_metastases" not in columns or "side" not in columns or modalities is None:
        texts = meta.get("texts")
        if texts is None or len(texts) != n:
            raise ValueError(
                "the real slices need metadata 'modalities' plus extra_columns 'n_metastases' "
                "and 'side' (the caption table of text2image.export), or one prompt per image "
                f"in metadata 'texts'; got metadata keys {sorted(meta)} for {n} images"
            )
        parsed = [attributes_from_prompt(t) for t in texts]
        if modalities is not None:
            parsed = [{**p, "modality": str(m)} for p, m in zip(parsed, modalities, strict=True)]
        return parsed
    out = []
    for item in range(n):
        where = f"real slice {_item_name(bundle, item)}"
        present = _metastasis_count(columns["n_metastases"][item], where) > 0
        side = None
        if present:
            side = str(columns["side"][item]).strip().lower()
            if side not in SIDE_CLASSES:
                raise ValueError(
                    f"{where}: a slice with metastases needs side 'left' or 'right', got "
                    f"{columns['side'][item]!r}"
                )
        out.append({"modality": str(modalities[item]), "lesion_present": present, "side": side})
    return out


def _class_name(attribute: str, value: Any) -> str | None:
    if attribute == "lesion_present":
        return LESION_CLASSES[int(bool(value))]
    return None if value is None else str(value)


def encode_labels(
    attributes: Sequence[Mapping[str, Any]], attribute: str, classes: Sequence[str]
) -> np.ndarray:
    """Class indices of ``attribute`` per item; `NOT_APPLICABLE` for a side without lesion
    and for a class the classifier does not know."""
    index = {name: i for i, name in enumerate(classes)}
    labels = [index.get(_class_name(attribute, a[attribute]), NOT_APPLICABLE) for a in attributes]
    return np.asarray(labels, dtype=np.int64)


def _check_images(images: Any, what: str) -> torch.Tensor:
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 1:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"{what}: 'images' must be a tensor [N, 1, S, S], got {shape}")
    if images.shape[-1] != images.shape[-2]:
        raise ValueError(f"{what}: images must be square, got {tuple(images.shape[-2:])}")
    if not torch.isfinite(images).all():
        raise ValueError(f"{what}: images hold NaN or Inf values")
    return images.float()


class AttributeClassifier(nn.Module):
    """[B, 1, S, S] in [-1, 1] -> ``{attribute: logits [B, K]}``: a shared trunk of three
    conv blocks (conv 3x3, GroupNorm, SiLU, 2x2 max pool; ``width``, 2 ``width``, 4 ``width``
    channels) pooled to a 4 x 4 map, and one linear head per attribute. Inputs of another
    size are resized to ``input_size`` (antialiased bilinear)."""

    def __init__(self, classes: Mapping[str, Sequence[str]], width: int, input_size: int) -> None:
        super().__init__()
        self.input_size = int(input_size)
        channels = (1, width, 2 * width, 4 * width)
        layers: list[nn.Module] = []
        for c_in, c_out in zip(channels[:-1], channels[1:], strict=True):
            layers += [
                nn.Conv2d(c_in, c_out, kernel_size=3, padding=1),
                nn.GroupNorm(math.gcd(8, c_out), c_out),
                nn.SiLU(),
                nn.MaxPool2d(2),
            ]
        self.trunk = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(_GRID), nn.Flatten())
        features = channels[-1] * _GRID * _GRID
        self.heads = nn.ModuleDict({a: nn.Linear(features, len(c)) for a, c in classes.items()})

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        if images.shape[-2:] != (self.input_size, self.input_size):
            images = F.interpolate(
                images, size=(self.input_size,) * 2, mode="bilinear", antialias=True
            )
        features = self.trunk(images)
        return {name: head(features) for name, head in self.heads.items()}


def class_weights(labels: np.ndarray | torch.Tensor, n_classes: int) -> torch.Tensor:
    """Class-balanced loss weights ``n / (K * n_class)`` over the applicable items (a class
    without items gets weight 0)."""
    labels = torch.as_tensor(labels)
    counts = torch.bincount(labels[labels >= 0], minlength=n_classes).double()
    weights = counts.sum() / (n_classes * counts.clamp(min=1))
    return torch.where(counts > 0, weights, torch.zeros_like(weights)).float()


def _balanced_loss(
    net: nn.Module, batch: Mapping[str, torch.Tensor], weights: Mapping[str, torch.Tensor]
) -> torch.Tensor:
    """Sum over heads of the class-weighted mean cross-entropy of the applicable items (a
    head with none in the batch adds 0)."""
    total = torch.zeros((), device=batch["image"].device)
    for name, logits in net(batch["image"]).items():
        target = batch[f"label.{name}"]
        applies = target >= 0
        safe = target.clamp(min=0)
        weight = weights[name].to(logits.device)[safe] * applies
        loss = F.cross_entropy(logits, safe, reduction="none")
        total = total + (weight * loss).sum() / weight.sum().clamp(min=1e-8)
    return total


def build_attribute_task(
    data: Mapping[str, TensorBundle],
    *,
    width: int,
    seed: int,
    attributes: Sequence[str],
    classes: Mapping[str, Sequence[str]],
) -> TrainingTask:
    """The attribute classifier's job factory: ``data["train"]`` holds ``images`` and one
    ``label.<attribute>`` per attribute (`NOT_APPLICABLE` where it does not apply)."""
    tensors = data["train"].tensors
    images = tensors["images"].float()
    labels = {f"label.{a}": tensors[f"label.{a}"].long() for a in attributes}
    weights = {a: class_weights(labels[f"label.{a}"], len(classes[a])) for a in attributes}
    torch.manual_seed(seed)  # the same initial weights on every rank and every re-run
    model = AttributeClassifier({a: classes[a] for a in attributes}, width, images.shape[-1])
    return TrainingTask(
        model=model,
        loss_fn=partial(_balanced_loss, weights=weights),
        train_data=LabelledImages(images, labels),
    )


@dataclass(frozen=True)
class AttributeClassifierParams:
    """``params:`` block of the attribute classifiers: trunk ``width`` (channels of the first
    block), optimizer ``steps``, ``batch_size``, AdamW ``lr`` and the ``seed`` of weights and
    batch order. No defaults in code: the values live in conf/base."""

    width: int
    steps: int
    batch_size: int
    lr: float
    seed: int

    def __post_init__(self) -> None:
        require_positive_ints(self, SECTION, "width", "steps", "batch_size")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ValueError(f"{SECTION}.seed must be an integer, got {self.seed!r}")
        if not isinstance(self.lr, int | float) or not 0 < self.lr < math.inf:
            raise ValueError(f"{SECTION}.lr must be a number > 0, got {self.lr!r}")

    @classmethod
    def from_params(cls, params: Mapping[str, Any] | None) -> AttributeClassifierParams:
        return config_tree_from_params(cls, params, SECTION)


def _counts(labels: np.ndarray, classes: Sequence[str]) -> dict[str, int]:
    counts = np.bincount(labels[labels >= 0], minlength=len(classes))
    return {name: int(c) for name, c in zip(classes, counts, strict=True)}


def train_attribute_classifiers(
    train: TensorBundle, *, params: Mapping[str, Any]
) -> tuple[TensorBundle, dict[str, Any]]:
    """Train the classifier on the real training slices; return its weights as a
    `TensorBundle` (metadata: attributes, classes, width, input_size, failed, ...) and a
    training report (items per class, loss weights, loss, steps)."""
    config = AttributeClassifierParams.from_params(params)
    images = _check_images(train.tensors.get("images"), "attribute classifier training slices")
    if len(images) == 0:
        raise ValueError("attribute classifier: the training bundle holds no slices")
    truth = real_attributes(train)
    all_classes = {
        "modality": sorted({t["modality"] for t in truth}),
        "lesion_present": list(LESION_CLASSES),
        "side": list(SIDE_CLASSES),
    }
    labels, counts, failed = {}, {}, {}
    for attribute in ATTRIBUTES:
        labels[attribute] = encode_labels(truth, attribute, all_classes[attribute])
        counts[attribute] = _counts(labels[attribute], all_classes[attribute])
        if sum(c > 0 for c in counts[attribute].values()) < 2:
            failed[attribute] = (
                f"the training slices hold fewer than two {attribute} classes "
                f"({counts[attribute]}): nothing to classify"
            )
    trained = [a for a in ATTRIBUTES if a not in failed]
    if not trained:
        raise ValueError(f"attribute classifier: no attribute can be trained: {failed}")
    classes = {a: all_classes[a] for a in trained}
    tensors = {"images": images.contiguous()}
    tensors.update({f"label.{a}": torch.from_numpy(labels[a]) for a in trained})
    job = TrainingJob(
        name="attribute_classifiers",
        factory=build_attribute_task,
        config=TrainingConfig(
            max_steps=config.steps,
            batch_size=config.batch_size,
            drop_last=False,
            lr=config.lr,
            weight_decay=1e-4,
            min_lr_ratio=0.1,
            max_grad_norm=1.0,
            log_every=max(1, config.steps // 10),
            seed=config.seed,
            progress=False,
            device="cpu",
        ),
        checkpoint_dir=None,
        data={"train": TensorBundle(tensors)},
        options={
            "width": config.width,
            "seed": config.seed,
            "attributes": trained,
            "classes": classes,
        },
        artifact_path="text2image/attribute_classifiers",
        torch_threads=SMALL_MODEL_THREADS,
    )
    outcome = run_job(job)
    losses = [r["loss"] for r in outcome.result.history if r["kind"] == "step"]
    weights = {a: class_weights(labels[a], len(classes[a])).tolist() for a in trained}
    metadata = {
        "kind": KIND,
        "attributes": trained,
        "classes": classes,
        "failed": failed,
        "width": config.width,
        "input_size": int(images.shape[-1]),
        "trained_on": "real training slices",
        "n_train": len(images),
        "training_counts": counts,
        "params": config_to_dict(config),
    }
    report = {
        **{k: metadata[k] for k in ("attributes", "failed", "n_train", "training_counts")},
        "class_weights": weights,
        "imbalance": "class-balanced loss weights n / (K * n_class)",
        "steps": outcome.result.steps,
        "loss_first": losses[0] if losses else None,
        "loss_last": losses[-1] if losses else None,
        "seconds": round(outcome.seconds, 2),
    }
    return TensorBundle(dict(outcome.result.model_state), metadata), report


def load_attribute_classifier(state: TensorBundle) -> AttributeClassifier:
    """The trained classifier (eval mode) from `train_attribute_classifiers`' state."""
    meta = state.metadata
    if meta.get("kind") != KIND:
        raise ValueError(
            f"not an attribute classifier state (metadata kind {meta.get('kind')!r}); it is "
            "made by train_attribute_classifiers"
        )
    classes = {a: meta["classes"][a] for a in meta["attributes"]}
    model = AttributeClassifier(classes, int(meta["width"]), int(meta["input_size"]))
    model.load_state_dict(state.tensors)
    return model.eval()


@torch.no_grad()
def predict_attributes(
    state: TensorBundle, images: torch.Tensor, batch_size: int = 256
) -> dict[str, np.ndarray]:
    """Predicted class index per trained attribute for images [N, 1, S, S] in [-1, 1]."""
    model = load_attribute_classifier(state)
    images = _check_images(images, "images to classify")
    out: dict[str, list[np.ndarray]] = {a: [] for a in state.metadata["attributes"]}
    with torch_threads(SMALL_MODEL_THREADS):
        for start in range(0, len(images), batch_size):
            for name, logits in model(images[start : start + batch_size]).items():
                out[name].append(logits.argmax(dim=1).numpy())
    return {a: np.concatenate(v) if v else np.zeros(0, np.int64) for a, v in out.items()}


def _score(
    target: np.ndarray, predicted: np.ndarray, classes: Sequence[str], *, rate: str, rows: str
) -> dict[str, Any]:
    """Counts, rate and balanced rate, confusion matrix and constant-guess baselines of the
    applicable items (target >= 0); the others are counted as excluded."""
    applies = target >= 0
    target, predicted, k = target[applies], predicted[applies], len(classes)
    scored: dict[str, Any] = {"n": int(target.size)}
    if not target.size:
        return {"status": "failed", "reason": f"no item with a known {rows} class", **scored}
    confusion = np.bincount(target * k + predicted, minlength=k * k).reshape(k, k)
    per_class, correct = confusion.sum(axis=1), np.diag(confusion)
    present = per_class > 0
    return {
        **scored,
        "n_per_class": dict(zip(classes, per_class.tolist(), strict=True)),
        rate: float(correct.sum() / target.size),
        f"balanced_{rate}": float((correct[present] / per_class[present]).mean()),
        "majority_class": classes[int(per_class.argmax())],
        "majority_baseline": float(per_class.max() / target.size),
        "balanced_chance": float(1.0 / present.sum()),
        "confusion": {
            "rows": rows,
            "columns": "predicted",
            "classes": list(classes),
            "counts": confusion.tolist(),
        },
    }


def _generated_prompts(generated: TensorBundle, n_images: int) -> list[str]:
    prompts = generated.metadata.get("prompts")
    if not isinstance(prompts, list | tuple) or not prompts:
        raise ValueError(
            "the generated bundle needs metadata 'prompts' (the prompt of each image, or of "
            f"each group of 'images_per_prompt' images); got metadata keys "
            f"{sorted(generated.metadata)}"
        )
    repeat = generated.metadata.get("images_per_prompt", 1)
    if len(prompts) == n_images:
        return [str(p) for p in prompts]
    if len(prompts) * int(repeat) == n_images:  # prompt-major, as generate_images makes them
        return [str(p) for p in prompts for _ in range(int(repeat))]
    raise ValueError(
        f"the generated bundle has {n_images} images but {len(prompts)} prompts "
        f"(images_per_prompt {repeat})"
    )


def attribute_agreement(
    state: TensorBundle, real_heldout: TensorBundle, generated: TensorBundle
) -> dict[str, Any]:
    """Per attribute the classifier's accuracy on real held-out slices and its agreement with
    the prompts on generated images (see the module docstring for how to read them)."""
    meta = state.metadata
    gen_images = _check_images(generated.tensors.get("images"), "generated bundle")
    prompts = _generated_prompts(generated, len(gen_images))
    requested = [attributes_from_prompt(p) for p in prompts]
    real_images = _check_images(real_heldout.tensors.get("images"), "real held-out bundle")
    truth = real_attributes(real_heldout)
    real_pred = predict_attributes(state, real_images)
    gen_pred = predict_attributes(state, gen_images)
    result: dict[str, Any] = {
        "classifier": {
            "name": "attribute_cnn",
            "trained_on": meta.get("trained_on"),
            "n_train": meta.get("n_train"),
            "width": meta.get("width"),
            "input_size": meta.get("input_size"),
        },
        "n_real": len(real_images),
        "n_generated": len(gen_images),
        "attributes": {},
    }
    for attribute in ATTRIBUTES:
        if attribute not in meta["attributes"]:
            reason = meta.get("failed", {}).get(attribute, "not trained")
            result["attributes"][attribute] = {"status": "failed", "reason": reason}
            continue
        classes = meta["classes"][attribute]
        entry = {"classes": list(classes)}
        for part, items, predicted, rate, rows in (
            ("real", truth, real_pred, "accuracy", "true"),
            ("generated", requested, gen_pred, "agreement", "requested"),
        ):
            target = encode_labels(items, attribute, classes)
            applicable = sum(_class_name(attribute, a[attribute]) is not None for a in items)
            entry[part] = _score(target, predicted[attribute], classes, rate=rate, rows=rows)
            entry[part]["excluded_unknown_class"] = int(applicable - (target >= 0).sum())
        result["attributes"][attribute] = entry
    return result
