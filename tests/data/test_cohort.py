"""The embedded cohort: deterministic, anatomically consistent, BraTS-style files."""

import numpy as np
import pytest

from medgen.data.captions import build_captions, caption_for, simulate_ratings
from medgen.data.cohort import CohortConfig, subject_id, synthesise_subject
from medgen.data.lesions import ENHANCING, NECROTIC, OEDEMA
from medgen.data.template import load_brain_template
from medgen.datasets import SubjectFolderDataset

CONFIG = CohortConfig(
    n_subjects=2, lesion_count_probabilities=(0.0, 0.0, 1.0, 0.0), inpainting_masks=2
)


@pytest.fixture(scope="module")
def subject():
    return synthesise_subject(load_brain_template(2), CONFIG, 1)


def test_files_follow_brats_naming(subject):
    assert sorted(subject.images) == sorted(
        ["t1_pre", "t1_gd", "flair", "bravo", "seg", "tissue", "growth", "t1n"]
        + ["mask-0000", "mask-0001", "t1n-voided-0000", "t1n-voided-0001"]
    )
    assert subject_id(CONFIG, 1) == "BraTS-SYN-00001-000"
    shapes = {image.shape for image in subject.images.values()}
    assert shapes == {(99, 117, 95)}


def test_same_seed_same_subject(subject):
    again = synthesise_subject(load_brain_template(2), CONFIG, 1)
    for suffix, image in subject.images.items():
        np.testing.assert_array_equal(
            np.asarray(image.dataobj), np.asarray(again.images[suffix].dataobj)
        )
    other = synthesise_subject(load_brain_template(2), CONFIG, 0)
    assert not np.array_equal(
        np.asarray(other.images["t1_pre"].dataobj), np.asarray(subject.images["t1_pre"].dataobj)
    )


def test_lesions_enhance_and_oedema_is_bright_on_flair(subject):
    seg = np.asarray(subject.images["seg"].dataobj)
    assert set(np.unique(seg)) <= {0, NECROTIC, OEDEMA, ENHANCING}
    assert len(subject.metadata["lesions"]) == 2
    tissue = np.asarray(subject.images["tissue"].dataobj)
    white = (tissue == 3) & (seg == 0)
    t1_pre = np.asarray(subject.images["t1_pre"].dataobj, dtype=float)
    t1_gd = np.asarray(subject.images["t1_gd"].dataobj, dtype=float)
    flair = np.asarray(subject.images["flair"].dataobj, dtype=float)
    rim = seg == ENHANCING
    assert t1_gd[rim].mean() > 1.2 * t1_gd[white].mean()
    assert t1_gd[rim].mean() > 1.5 * t1_pre[rim].mean()
    assert flair[seg == OEDEMA].mean() > 1.3 * flair[white].mean()


def test_inpainting_masks_in_healthy_tissue_and_voided(subject):
    seg = np.asarray(subject.images["seg"].dataobj)
    tissue = np.asarray(subject.images["tissue"].dataobj)
    t1n = np.asarray(subject.images["t1n"].dataobj)
    for k in range(2):
        mask = np.asarray(subject.images[f"mask-{k:04d}"].dataobj) > 0
        voided = np.asarray(subject.images[f"t1n-voided-{k:04d}"].dataobj)
        assert mask.sum() > 50
        assert not (mask & (seg > 0)).any()
        assert (tissue[mask] > 0).all()
        assert (voided[mask] == 0).all()
        np.testing.assert_array_equal(voided[~mask], t1n[~mask])


def test_growth_map_is_a_probability_peaking_in_tumour(subject):
    growth = np.asarray(subject.images["growth"].dataobj)
    seg = np.asarray(subject.images["seg"].dataobj)
    assert growth.min() >= 0 and growth.max() <= 1
    assert (growth[seg > 0] == 1).all()
    assert growth[(seg == 0) & (growth > 0)].mean() < 0.5


def test_captions_and_ratings(tmp_path, subject):
    dataset = SubjectFolderDataset(path=str(tmp_path / "c"), progress=False)
    dataset.save({"BraTS-SYN-00001-000": subject})
    records = dataset.load()
    captions = build_captions(records, ["t1_gd", "flair"])
    assert list(captions.columns) == ["path", "text", "modality"]
    assert captions["path"].tolist() == [
        "BraTS-SYN-00001-000/BraTS-SYN-00001-000-t1_gd.nii.gz",
        "BraTS-SYN-00001-000/BraTS-SYN-00001-000-flair.nii.gz",
    ]
    largest = subject.metadata["lesions"][0]
    assert "2 metastases" in captions["text"][0]
    assert f"{largest['side']} {largest['lobe']}" in captions["text"][0]
    ratings = simulate_ratings(records, ["t1_gd", "flair"], seed=1, noise_max=0.05, bias_max=0.3)
    assert list(ratings.columns) == ["image_path", "rating", "modality", "expert_level", "prompt"]
    assert len(ratings) == 4 and ratings["rating"].between(1, 3).all()
    assert set(ratings["expert_level"]) <= {"resident", "neuroradiologist"}


def test_caption_without_lesions():
    assert caption_for("flair", []) == "FLAIR brain MRI without visible metastases."


def test_config_rejects_unknown_and_invalid():
    with pytest.raises(ValueError, match="Unknown cohort parameters"):
        CohortConfig.from_params({"subjects": 3})
    with pytest.raises(ValueError, match="sum to 1"):
        CohortConfig.from_params({"lesion_count_probabilities": [0.5, 0.2]})
