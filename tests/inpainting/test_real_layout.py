"""Real BraTS 2023/2024 local-synthesis folders enter by catalog ``suffix_aliases`` only.

A tiny folder in exactly the challenge's layout (plus the user's tissue and growth maps) is
read with the aliases of docs/inpainting.md, validated and preprocessed by the
data_processing nodes with the documented parameters, and turned into inpainting cases.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from medgen.data.resize import resize_labels
from medgen.datasets import SubjectFolderDataset
from medgen.inpainting.cases import CaseConfig, build_inpainting_cases
from medgen.pipelines.data_processing.nodes import preprocess_cohort, validate_cohort

SHAPE = (32, 36, 32)  # 1 mm, as BraTS; preprocessing resamples to 2 mm (16 x 18 x 16)
BRATS_AFFINE = np.array([[-1.0, 0, 0, 16], [0, -1.0, 0, 18], [0, 0, 1.0, -16], [0, 0, 0, 1]])
SUBJECTS = ("BraTS-GLI-00001-000", "BraTS-GLI-00002-000", "BraTS-GLI-00003-000")
ALIASES = {
    "t1n-voided": "t1n-voided-0000",
    "mask": "mask-0000",
    "mask-healthy": "mask-healthy-0000",
    "mask-unhealthy": "mask-unhealthy-0000",
}
# docs/inpainting.md: data_processing parameters for this layout
VALIDATION = {
    "required_images": ["t1n"],
    "required_labels": ["tissue"],
    "label_values": {"tissue": [0, 1, 2, 3], r"mask(-healthy|-unhealthy)?-\d+": [0, 1]},
    "continuous_maps": ["growth"],
}
PREPROCESSING = {"spacing_mm": [2.0, 2.0, 2.0], "spatial_size": [16, 18, 16]}
SIZE = (8, 9, 8)


def write_brats_subject(root: Path, sid: str, seed: int) -> None:
    """<id>/<id>-{t1n,t1n-voided,mask,mask-healthy,mask-unhealthy}.nii.gz + tissue, growth."""
    rng = np.random.default_rng(seed)
    grid = np.indices(SHAPE).astype(np.float32)
    centre = (np.array(SHAPE) / 2 - 0.5)[:, None, None, None]
    radius = np.sqrt((((grid - centre) / (np.array(SHAPE)[:, None, None, None] / 2.3)) ** 2).sum(0))
    tissue = np.select([radius < 0.5, radius < 0.8, radius < 1.0], [3, 2, 1], 0).astype(np.uint8)
    signal = np.choose(tissue, [0.0, 350.0, 700.0, 1000.0])
    t1n = np.clip(signal + rng.normal(0, 25, SHAPE) * (tissue > 0), 0, None).astype(np.int16)
    unhealthy = np.zeros(SHAPE, np.uint8)
    unhealthy[10:16, 12:22, 10:20] = 1  # the tumour: voided, but no ground truth
    healthy = np.zeros(SHAPE, np.uint8)
    healthy[16:26, 12:22, 10:20] = 1  # healthy tissue next to it: the scored part
    mask = healthy | unhealthy
    growth = np.exp(-np.abs(grid[0] - 13) / 6).astype(np.float32)  # a user's growth model
    files = {
        "t1n": t1n,
        "t1n-voided": np.where(mask > 0, 0, t1n).astype(np.int16),
        "mask": mask,
        "mask-healthy": healthy,
        "mask-unhealthy": unhealthy,
        "tissue": tissue,  # user-provided, e.g. from a segmentation tool
        "growth": growth,
    }
    (root / sid).mkdir(parents=True)
    for suffix, data in files.items():
        nib.save(nib.Nifti1Image(data, BRATS_AFFINE), root / sid / f"{sid}-{suffix}.nii.gz")


@pytest.fixture
def brats_folder(tmp_path: Path) -> Path:
    root = tmp_path / "brats"
    for seed, sid in enumerate(SUBJECTS):
        write_brats_subject(root, sid, seed)
    return root


def _preprocess(raw: dict, tmp_path: Path, validation: dict) -> dict:
    """validate_cohort + preprocess_cohort, written and read back as preprocessed_cohort."""
    report, _ = validate_cohort(raw, validation, on_bad_subject="fail")
    planned = preprocess_cohort(raw, report, validation, PREPROCESSING)
    dataset = SubjectFolderDataset(path=str(tmp_path / "preprocessed"), progress=False)
    dataset.save(planned)
    return dataset.load()


def test_aliases_give_the_canonical_suffixes(brats_folder: Path):
    raw = SubjectFolderDataset(path=str(brats_folder), suffix_aliases=ALIASES).load()
    assert sorted(raw) == list(SUBJECTS)
    assert set(raw[SUBJECTS[0]].files) == {
        "t1n",
        "t1n-voided-0000",
        "mask-0000",
        "mask-healthy-0000",
        "mask-unhealthy-0000",
        "tissue",
        "growth",
    }
    assert raw[SUBJECTS[0]].files["mask-0000"].endswith(f"{SUBJECTS[0]}-mask.nii.gz")
    # the raw folder is not the inpainting input: its intensities are not in [-1, 1]
    bundle, rejected = build_inpainting_cases(raw, SUBJECTS, CaseConfig(size=SIZE), "train")
    assert len(bundle) == 0 and len(rejected) == 3
    assert all("not in [-1, 1]" in row["reason"] for row in rejected)


def test_preprocessed_brats_layout_becomes_cases(brats_folder: Path, tmp_path: Path):
    raw = SubjectFolderDataset(path=str(brats_folder), suffix_aliases=ALIASES).load()
    records = _preprocess(raw, tmp_path, VALIDATION)
    bundle, rejected = build_inpainting_cases(records, SUBJECTS, CaseConfig(size=SIZE), "test")
    assert rejected == []  # voided consistent with t1n outside the mask, masks binary, ...
    assert bundle.metadata["case_ids"] == [f"{sid}_mask-0000" for sid in SUBJECTS]
    assert bundle["t1n"].shape == (3, 1, *SIZE)
    assert bundle.metadata["voxel_spacing_mm"] == [4.0, 4.0, 4.0]  # 16 x 2 mm over 8 voxels
    for i, sid in enumerate(SUBJECTS):

        def at_size(suffix: str, record=records[sid]) -> torch.Tensor:
            data = np.asarray(record.load(suffix).dataobj).astype(np.uint8)
            return resize_labels(torch.from_numpy(data)[None, None], SIZE)[0]

        healthy, unhealthy = at_size("mask-healthy-0000"), at_size("mask-unhealthy-0000")
        assert healthy.any() and unhealthy.any()
        assert torch.equal(bundle["score_mask"][i], healthy)  # the healthy part only
        assert torch.equal(bundle["mask"][i], healthy | unhealthy)  # the whole voided region
        assert not (bundle["score_mask"][i] & unhealthy).any()
    known = bundle["mask"] == 0
    assert torch.equal(bundle["voided"][known], bundle["t1n"][known])
    assert bool((bundle["voided"][~known] == -1).all())


def test_masks_not_declared_as_labels_are_rescaled_and_rejected(brats_folder, tmp_path):
    """Without the mask pattern in validation.label_values, preprocessing scales the healthy
    and unhealthy masks like images; the builder then refuses them as non-binary."""
    raw = SubjectFolderDataset(path=str(brats_folder), suffix_aliases=ALIASES).load()
    validation = {**VALIDATION, "label_values": {"tissue": [0, 1, 2, 3], r"mask-\d+": [0, 1]}}
    records = _preprocess(raw, tmp_path, validation)
    _, rejected = build_inpainting_cases(records, SUBJECTS, CaseConfig(size=SIZE), "test")
    assert len(rejected) == 3
    assert all(row["file"].endswith("-mask-healthy-0000.nii.gz") for row in rejected)
    reason = "expected a binary mask, found values [-0.9999999998, 0.9999999998]"
    assert all(reason in row["reason"] for row in rejected)  # int16-scaled images, not masks
