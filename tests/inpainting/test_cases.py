"""Inpainting cases: one per (subject, mask), checked, resized, and their conditioning maps."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from medgen.data.slicing import VolumeConfig, extract_volumes, load_volumes
from medgen.datasets import SubjectFolderDataset, TensorBundle, TensorDataset
from medgen.inpainting.cases import (
    CaseConfig,
    build_inpainting_cases,
    conditioning_maps,
    population_tissue_prior,
)
from tests.conftest import write_subject

SHAPE = (16, 20, 16)
SIZE = (8, 10, 8)  # zoom 2 on every axis: 2 mm voxels become 4 mm
AFFINE = np.array([[2.0, 0, 0, -16], [0, 2.0, 0, -20], [0, 0, 2.0, -14], [0, 0, 0, 1]])
CONFIG = CaseConfig(size=SIZE)


def _stored(data: np.ndarray, dtype=np.int16, affine=AFFINE) -> nib.Nifti1Image:
    """As preprocessing stores them: intensities int16 with a scale factor, labels uint8."""
    image = nib.Nifti1Image(data.astype(np.float32 if dtype == np.int16 else dtype), affine)
    image.set_data_dtype(dtype)
    return image


def subject_images(seed: int, n_masks: int = 2) -> dict[str, nib.Nifti1Image]:
    """A preprocessed-style subject: t1n in [-1, 1], CSF/GM/WM shells, masks in the brain."""
    rng = np.random.default_rng(seed)
    grid = np.indices(SHAPE).astype(np.float32)
    centre = (np.array(SHAPE) / 2 - 0.5)[:, None, None, None]
    radius = np.sqrt((((grid - centre) / (np.array(SHAPE)[:, None, None, None] / 2.2)) ** 2).sum(0))
    tissue = np.select([radius < 0.45 + 0.05 * seed, radius < 0.75, radius < 1.0], [3, 2, 1], 0)
    t1n = np.choose(tissue, [-1.0, -0.6, 0.1, 0.7]) + rng.normal(0, 0.05, SHAPE) * (tissue > 0)
    t1n = np.clip(t1n, -1, 1)
    images = {
        "t1n": _stored(t1n),
        "tissue": _stored(tissue, np.uint8),
        "growth": _stored(np.clip(grid[0] / SHAPE[0], 0, 1), np.float32),
    }
    boxes = [(slice(5, 9), slice(7, 11), slice(5, 9)), (slice(8, 11), slice(8, 12), slice(8, 11))]
    for k in range(n_masks):
        mask = np.zeros(SHAPE, np.uint8)
        mask[boxes[k]] = 1
        images[f"mask-{k:04d}"] = _stored(mask, np.uint8)
        images[f"t1n-voided-{k:04d}"] = _stored(np.where(mask > 0, -1.0, t1n))
    healthy = np.asarray(images["mask-0000"].dataobj).copy()
    healthy[5:7] = 0  # the first half of mask 0 is "tumour": no ground truth there
    images["mask-healthy-0000"] = _stored(healthy, np.uint8)
    return images


def cohort(tmp_path: Path, edit=None, n_masks=(2, 1)) -> dict:
    """Subjects S-0 (2 masks) and S-1 (1 mask); ``edit(images)`` changes S-0's files."""
    root = tmp_path / "pre"
    for index, count in enumerate(n_masks):
        images = subject_images(index, count)
        if index == 0 and edit is not None:
            edit(images)
        write_subject(root, f"S-{index}", images)
    return SubjectFolderDataset(path=str(root)).load()


def test_bundle_shapes_ids_and_metadata(tmp_path: Path):
    records = cohort(tmp_path)
    bundle, rejected = build_inpainting_cases(records, ["S-0", "S-1"], CONFIG, "train")
    assert rejected == []
    assert len(bundle) == 3
    for key, dtype in {"t1n": torch.float32, "voided": torch.float32, "growth": torch.float32,
                       "mask": torch.uint8, "score_mask": torch.uint8, "brain": torch.uint8,
                       "tissue": torch.uint8}.items():  # fmt: skip
        assert bundle[key].shape == (3, 1, *SIZE) and bundle[key].dtype == dtype, key
    assert bundle["subject_index"].tolist() == [0, 0, 1]
    assert bundle["mask_index"].tolist() == [0, 1, 0]
    assert bundle["subject_index"].dtype == bundle["mask_index"].dtype == torch.int64
    meta = bundle.metadata
    assert meta["case_ids"] == ["S-0_mask-0000", "S-0_mask-0001", "S-1_mask-0000"]
    assert meta["subjects"] == ["S-0", "S-1"] and meta["split"] == "train"
    assert meta["mask_names"] == ["mask-0000", "mask-0001", "mask-0000"]
    assert meta["size"] == list(SIZE) and meta["voxel_spacing_mm"] == [4.0, 4.0, 4.0]
    assert meta["intensity_range"] == [-1.0, 1.0] and meta["growth_threshold"] == 0.2
    assert meta["tissue_labels"]["2"] == "GM"
    assert meta["source_files"][0]["score_mask"].endswith("S-0-mask-healthy-0000.nii.gz")
    assert meta["source_files"][1]["score_mask"] is None
    assert meta["source_files"][1]["voided"].endswith("S-0-t1n-voided-0001.nii.gz")
    assert set(bundle["mask"].unique().tolist()) == {0, 1}
    assert bool((bundle["brain"] == (bundle["tissue"] > 0)).all())
    assert 0 <= bundle["growth"].min() and bundle["growth"].max() <= 1
    saved = TensorDataset(filepath=str(tmp_path / "cases_train.safetensors"))
    saved.save(bundle)  # metadata is JSON: the catalog can store the bundle as it is
    assert saved.load().metadata == meta
    # t1n and tissue are resized exactly as the 3D volume bundles are
    volumes = extract_volumes(
        load_volumes(records, ["S-0"], ["t1n"]), VolumeConfig(("t1n",), SIZE), "train"
    )
    assert torch.equal(bundle["t1n"][0], volumes["images"][0])
    assert torch.equal(bundle["tissue"][0], volumes["tissue"][0])


def test_voided_is_t1n_bit_exact_outside_the_mask(tmp_path: Path):
    bundle, _ = build_inpainting_cases(cohort(tmp_path), ["S-0", "S-1"], CONFIG, "val")
    known = bundle["mask"] == 0
    assert torch.equal(bundle["voided"][known], bundle["t1n"][known])
    assert bool((bundle["voided"][~known] == -1).all())


def test_score_mask_is_the_healthy_part_or_the_whole_mask(tmp_path: Path):
    bundle, _ = build_inpainting_cases(cohort(tmp_path), ["S-0", "S-1"], CONFIG, "val")
    mask, score = bundle["mask"], bundle["score_mask"]
    assert bool((score <= mask).all())
    assert 0 < score[0].sum() < mask[0].sum()  # mask-healthy-0000 exists: a strict subset
    assert torch.equal(score[1], mask[1])  # no mask-healthy-0001: the whole mask is scored


def test_affine_maps_resized_voxels_to_the_same_world_points(tmp_path: Path):
    bundle, _ = build_inpainting_cases(cohort(tmp_path), ["S-0"], CONFIG, "val")
    affine = np.array(bundle.metadata["affine"][0])
    assert np.allclose(np.abs(np.diag(affine)[:3]), [4.0, 4.0, 4.0])
    # align_corners=False: output voxel j sits at input coordinate (j + 0.5) * 2 - 0.5
    for j in ([0, 0, 0], [7, 9, 7], [3, 1, 5]):
        source = (np.array(j) + 0.5) * 2 - 0.5
        assert np.allclose(affine @ [*j, 1], AFFINE @ [*source, 1])


def _set(suffix, data=None, affine=AFFINE, dtype=None):
    def edit(images):
        old = images[suffix]
        new = old.get_fdata() if data is None else data(old.get_fdata())
        if dtype is None:  # same storage as before: scaled int16 for intensities
            images[suffix] = _stored(new, old.get_data_dtype(), affine)
        else:  # raw integers, as a scanner writes them
            images[suffix] = nib.Nifti1Image(new.astype(dtype), affine)

    return edit


def _drop(suffix):
    return lambda images: images.pop(suffix)


def _move_mask_to_background(images):
    mask = np.zeros(SHAPE, np.uint8)
    mask[0:3, 0:3, 0:3] = 1
    images["mask-0001"] = nib.Nifti1Image(mask, AFFINE)


def _tiny_mask(images):
    mask = np.zeros(SHAPE, np.uint8)
    mask[8, 10, 8] = 1  # nearest-exact at zoom 2 samples the odd indices only: it vanishes
    images["mask-0001"] = nib.Nifti1Image(mask, AFFINE)
    images["t1n-voided-0001"] = _stored(np.where(mask > 0, -1.0, images["t1n"].get_fdata()))


def _shift_voided(value):
    return _set("t1n-voided-0000", lambda d: np.where(np.indices(SHAPE)[0] == 12, value, d))


BAD_INPUTS = {
    # name: (edit of S-0, rejected case ids of S-0, file suffix, reason fragment)
    "non-binary mask": (
        _set("mask-0000", lambda d: d * 2),
        ["S-0_mask-0000"],
        "mask-0000",
        "expected a binary mask, found values [2]",
    ),
    "empty mask": (_set("mask-0001", lambda d: d * 0), ["S-0_mask-0001"], "mask-0001", "empty"),
    "mask vanishes when resized": (_tiny_mask, ["S-0_mask-0001"], "mask-0001", "empty at size"),
    "mask outside the brain": (
        _move_mask_to_background,
        ["S-0_mask-0001"],
        "mask-0001",
        "100.0% of the mask lies outside the brain",
    ),
    "healthy part outside the mask": (
        _set("mask-healthy-0000", lambda d: np.roll(d, 4, axis=0)),
        ["S-0_mask-0000"],
        "mask-healthy-0000",
        "lie outside mask-0000",
    ),
    "voided differs from t1n outside the mask": (
        _shift_voided(0.9),
        ["S-0_mask-0000"],
        "t1n-voided-0000",
        "differs from t1n outside the mask",
    ),
    "missing voided image": (
        _drop("t1n-voided-0001"),
        ["S-0_mask-0001"],
        "t1n-voided-0001",
        "missing voided image 't1n-voided-0001'",
    ),
    "missing t1n": (
        _drop("t1n"),
        ["S-0_mask-0000", "S-0_mask-0001"],
        "t1n",
        "missing image 't1n'",
    ),
    "missing tissue map": (
        _drop("tissue"),
        ["S-0_mask-0000", "S-0_mask-0001"],
        "tissue",
        "missing conditioning map",
    ),
    "missing growth map": (
        _drop("growth"),
        ["S-0_mask-0000", "S-0_mask-0001"],
        "growth",
        "missing conditioning map",
    ),
    "shape mismatch": (
        lambda images: images.update(
            {"mask-0001": nib.Nifti1Image(np.ones((16, 20, 15), np.uint8), AFFINE)}
        ),
        ["S-0_mask-0001"],
        "mask-0001",
        "shape (16, 20, 15) differs from (16, 20, 16)",
    ),
    "affine mismatch": (
        _set("t1n-voided-0001", affine=AFFINE + np.pad([[2.0]], ((0, 3), (3, 0)))),
        ["S-0_mask-0001"],
        "t1n-voided-0001",
        "affine differs from t1n by 2 mm",
    ),
    "t1n not preprocessed": (
        _set("t1n", lambda d: (d + 1) * 500, dtype=np.int16),
        ["S-0_mask-0000", "S-0_mask-0001"],
        "t1n",
        "not in [-1, 1]",
    ),
}


@pytest.mark.parametrize("name", list(BAD_INPUTS))
def test_bad_input_is_skipped_with_its_reason_or_fails(tmp_path: Path, name: str):
    edit, bad_cases, suffix, reason = BAD_INPUTS[name]
    records = cohort(tmp_path, edit)
    bundle, rejected = build_inpainting_cases(records, ["S-0", "S-1"], CONFIG, "test")
    assert [row["case"] for row in rejected] == bad_cases
    for row in rejected:
        assert row["subject"] == "S-0"
        assert row["file"].endswith(f"S-0-{suffix}.nii.gz")
        assert reason in row["reason"]
    good = [c for c in ("S-0_mask-0000", "S-0_mask-0001", "S-1_mask-0000") if c not in bad_cases]
    assert bundle.metadata["case_ids"] == good  # the other cases are all still there
    with pytest.raises(ValueError, match=rf"S-0 \(case {bad_cases[0]}\): .*{suffix}"):
        build_inpainting_cases(records, ["S-0", "S-1"], dataclasses.replace(CONFIG, on_bad_case="fail"), "test")  # fmt: skip


def test_int16_rounding_between_t1n_and_voided_is_tolerated(tmp_path: Path):
    def brightest_voxel_in_mask(images):
        t1n = images["t1n"].get_fdata()
        t1n[6, 8, 6] = 1.0  # inside mask 0: its voided copy has a smaller range, so its own
        images["t1n"] = _stored(t1n)  # int16 scale factor, and values round differently
        for k in (0, 1):
            mask = np.asarray(images[f"mask-{k:04d}"].dataobj) > 0
            images[f"t1n-voided-{k:04d}"] = _stored(np.where(mask, -1.0, t1n))

    records = cohort(tmp_path, brightest_voxel_in_mask)
    t1n, voided = (records["S-0"].load(s).get_fdata() for s in ("t1n", "t1n-voided-0000"))
    outside = np.asarray(records["S-0"].load("mask-0000").dataobj) == 0
    assert np.abs(t1n - voided)[outside].max() > 0  # the files really differ a little
    _, rejected = build_inpainting_cases(records, ["S-0"], CONFIG, "train")
    assert rejected == []


def test_missing_subject_masks_per_subject_and_empty_split(tmp_path: Path):
    records = cohort(tmp_path)
    bundle, rejected = build_inpainting_cases(
        records, ["S-0", "S-9"], dataclasses.replace(CONFIG, masks_per_subject=1), "val"
    )
    assert bundle.metadata["case_ids"] == ["S-0_mask-0000"]
    assert rejected[0]["subject"] == "S-9" and "not in the cohort" in rejected[0]["reason"]
    empty, rejected = build_inpainting_cases(records, [], CONFIG, "test")
    assert empty["t1n"].shape == (0, 1, *SIZE) and rejected == []
    assert empty["subject_index"].shape == (0,)
    with pytest.raises(ValueError, match="no cases"):
        population_tissue_prior(empty)


def test_config_from_params():
    config = CaseConfig.from_params({"size": [8, 10, 8], "masks_per_subject": 1}, "inpainting")
    assert config.size == (8, 10, 8) and config.masks_per_subject == 1
    with pytest.raises(ValueError, match="did you mean 'growth_threshold'"):
        CaseConfig.from_params({"growth_treshold": 0.3})
    for bad in ({"on_bad_case": "ignore"}, {"size": [8, 8]}, {"mask_pattern": "mask"}):
        with pytest.raises(ValueError, match="cases"):
            CaseConfig.from_params(bad)


def _one_hot(tissue: torch.Tensor) -> torch.Tensor:
    return torch.cat([(tissue == c).float() for c in (1, 2, 3)], dim=1)


def test_prior_counts_each_subject_once(tmp_path: Path):
    bundle, _ = build_inpainting_cases(cohort(tmp_path), ["S-0", "S-1"], CONFIG, "train")
    prior = population_tissue_prior(bundle)  # S-0 has two cases, S-1 one
    assert prior.shape == (3, *SIZE) and prior.dtype == torch.float32
    expected = (_one_hot(bundle["tissue"][0:1]) + _one_hot(bundle["tissue"][2:3]))[0] / 2
    assert torch.allclose(prior, expected)
    assert not torch.allclose(prior, _one_hot(bundle["tissue"]).mean(0))  # not per case


def test_conditioning_variants(tmp_path: Path):
    records = cohort(tmp_path)
    train, _ = build_inpainting_cases(records, ["S-0", "S-1"], CONFIG, "train")
    test, _ = build_inpainting_cases(records, ["S-0"], CONFIG, "test")
    prior = population_tissue_prior(train)
    mask = test["mask"].bool().expand(-1, 3, -1, -1, -1)
    own = _one_hot(test["tissue"])

    oracle = conditioning_maps(test, "oracle")
    assert oracle.shape == (2, 4, *SIZE) and oracle.dtype == torch.float32
    assert torch.equal(oracle[:, :1], (test["growth"] > 0.2).float())
    assert torch.equal(oracle[:, 1:], own)
    honest = conditioning_maps(test, "honest", prior)
    assert torch.equal(honest[:, :1], oracle[:, :1])
    assert torch.equal(honest[:, 1:][~mask], own[~mask])
    assert torch.equal(honest[:, 1:][mask], prior[None].expand(2, -1, -1, -1, -1)[mask])
    assert not torch.count_nonzero(conditioning_maps(test, "none"))
    assert conditioning_maps(test, "none").shape == (2, 4, *SIZE)

    # another truth inside the mask: the honest maps cannot tell, the oracle can
    tissue = test["tissue"].clone()
    tissue[test["mask"].bool()] = torch.where(tissue[test["mask"].bool()] == 3, 1, 3).to(
        tissue.dtype
    )
    changed = TensorBundle({**test.tensors, "tissue": tissue}, test.metadata)
    assert torch.equal(conditioning_maps(changed, "honest", prior), honest)
    assert not torch.equal(conditioning_maps(changed, "oracle"), oracle)

    with pytest.raises(ValueError, match="population_tissue_prior"):
        conditioning_maps(test, "honest")
    with pytest.raises(ValueError, match="one of"):
        conditioning_maps(test, "leaky")
