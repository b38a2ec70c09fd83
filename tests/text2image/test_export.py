from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
from kedro_datasets.partitions import PartitionedDataset

from medgen.data.slicing import SliceConfig, SubjectVolumes, extract_slices
from medgen.datasets import TensorBundle
from medgen.text2image.export import (
    CAPTION_2D_COLUMNS,
    ExportConfig,
    export_captioned_slices,
    select_slices,
    to_uint8,
)
from tests.conftest import tiny_subject_images

MODALITIES = ["t1_pre", "t1_gd", "flair", "bravo"]
S = 16


def _bundle(split: str, subjects: list[str], slices: range, seed: int) -> TensorBundle:
    """Slices of ``subjects``; the first subject has a 4 x 4 lesion left of the midline."""
    n = len(subjects) * len(slices)
    images = torch.rand((n, 4, S, S), generator=torch.Generator().manual_seed(seed)) * 2 - 1
    tissue = torch.zeros((n, 1, S, S), dtype=torch.uint8)
    tissue[:, :, 1:15, 2:14] = 3  # midline between columns 7 and 8
    seg = torch.zeros_like(tissue)
    seg[: len(slices), :, 3:7, 3:7] = 3  # anterior, left: 4 x 4 pixels of 2 mm
    return TensorBundle(
        {
            "images": images,
            "seg": seg,
            "tissue": tissue,
            "subject_index": torch.arange(len(subjects)).repeat_interleave(len(slices)),
            "slice_index": torch.tensor(list(slices) * len(subjects)),
        },
        {"subjects": subjects, "modalities": MODALITIES, "pixel_spacing_mm": 2.0, "size": S},
    )


@pytest.fixture
def bundles() -> dict[str, TensorBundle]:
    return {
        "train": _bundle("train", ["P-00001-000", "P-00002-000"], range(10, 20), seed=0),
        "val": _bundle("val", ["P-00003-000"], range(5, 12), seed=1),
    }


def test_table_columns_paths_splits_and_every_nth(bundles):
    partitions, table = export_captioned_slices(bundles, ExportConfig())
    assert list(table.columns) == CAPTION_2D_COLUMNS
    assert len(table) == 2 * (5 + 5 + 4)  # two modalities; slices 10,12,..,18 and 5,7,9,11
    assert set(table["modality"]) == {"t1_gd", "flair"}
    assert table.groupby("split")["subject"].unique().map(sorted).to_dict() == {
        "train": ["P-00001-000", "P-00002-000"],
        "val": ["P-00003-000"],
    }
    first = table[table["subject"] == "P-00001-000"]
    assert sorted(first["slice_index"].unique()) == [10, 12, 14, 16, 18]
    assert sorted(table[table["split"] == "val"]["slice_index"].unique()) == [5, 7, 9, 11]
    assert "slices/train/P-00001-000_flair_z010.png" in set(table["path"])
    assert sorted(f"slices/{key}.png" for key in partitions) == sorted(table["path"])
    assert all(callable(value) for value in partitions.values())
    # captions: lesion slices name the left side, the lesion-free subject says so
    row = first[(first["modality"] == "flair") & (first["slice_index"] == 14)].iloc[0]
    assert row["n_metastases"] == 1 and row["side"] == "left" and row["largest_mm"] == 10.5
    assert row["text"].startswith("Brain MRI, FLAIR: 1 metastasis of 10 mm in the left ")
    clean = table[table["subject"] == "P-00002-000"]
    assert (clean["n_metastases"] == 0).all()
    assert set(clean["text"]) == {
        "Brain MRI, T1 post-gadolinium: without visible metastases",
        "Brain MRI, FLAIR: without visible metastases",
    }


def test_pngs_round_trip_through_the_partitioned_dataset(bundles, tmp_path: Path):
    partitions, table = export_captioned_slices(bundles, ExportConfig(modalities=("bravo",)))
    dataset = PartitionedDataset(
        path=str(tmp_path / "slices"), dataset="pillow.ImageDataset", filename_suffix=".png"
    )
    dataset.save(partitions)
    csv = tmp_path / "captions_2d.csv"
    table.to_csv(csv, index=False)
    reread = pd.read_csv(csv)
    for _, row in reread.iterrows():
        assert (csv.parent / row["path"]).is_file(), row["path"]
    key = "val/P-00003-000_bravo_z007"
    image = dataset.load()[key]()
    assert image.mode == "L" and image.size == (S, S)
    bundle = bundles["val"]
    item = int(np.flatnonzero(bundle["slice_index"].numpy() == 7)[0])
    original = bundle["images"][item, 3].numpy()
    restored = np.asarray(image, dtype=np.float32) / 127.5 - 1.0
    assert np.abs(restored - original).max() <= 1 / 127.5


def test_to_uint8_ends_and_clipping():
    assert to_uint8(np.array([-1.0, 0.0, 1.0, 1.5, -3.0])).tolist() == [0, 128, 255, 255, 0]


def test_size_and_max_slices_per_subject(bundles):
    config = ExportConfig(
        modalities=("flair",), every_nth_slice=1, size=8, max_slices_per_subject=3
    )
    partitions, table = export_captioned_slices(bundles, config)
    # 10 slices per train subject thinned to 3, evenly from the lowest to the highest
    first = table[table["subject"] == "P-00001-000"]
    assert first["slice_index"].tolist() == [10, 14, 19]
    assert partitions["train/P-00001-000_flair_z014"]().size == (8, 8)
    # the caption is measured on the bundle's own labels, in mm: the size does not change it
    assert first["largest_mm"].tolist() == [10.5] * 3


def test_select_slices_is_per_subject_from_the_lowest_slice():
    subject_index = np.array([1, 1, 1, 0, 0, 0, 0])
    slice_index = np.array([7, 5, 6, 3, 4, 5, 6])
    chosen = select_slices(subject_index, slice_index, ExportConfig(every_nth_slice=2))
    assert slice_index[chosen].tolist() == [3, 5, 5, 7]


def test_config_refuses_unknown_keys_and_bad_values(bundles):
    with pytest.raises(ValueError, match="did you mean 'every_nth_slice'"):
        ExportConfig.from_params({"every_nth_slices": 3})
    with pytest.raises(ValueError, match="every_nth_slice must be an integer >= 1"):
        ExportConfig.from_params({"every_nth_slice": 0})
    assert ExportConfig.from_params({"modalities": ["flair"]}).modalities == ("flair",)
    with pytest.raises(ValueError, match="no modality \\['t2w'\\]"):
        export_captioned_slices(bundles, ExportConfig(modalities=("t2w",)))


def _stored_radiologically(image: nib.Nifti1Image) -> nib.Nifti1Image:
    """The same world-space image with its x axis stored right -> left (LAS voxel order)."""
    flip = np.diag([-1.0, 1.0, 1.0, 1.0])
    flip[0, 3] = image.shape[0] - 1
    data = np.ascontiguousarray(np.asarray(image.dataobj)[::-1])
    return nib.Nifti1Image(data, image.affine @ flip)


@pytest.mark.parametrize(("lesion_x", "side"), [(5, "left"), (14, "right")])
def test_side_is_the_subjects_side_from_nifti_to_caption(lesion_x, side):
    """A lesion at low world x (RAS: the subject's left) stays on the left through storage
    in LAS order, reorientation to RAS, `extract_slices` (`axial_plane`) and the caption.

    nibabel's canonical (RAS) reorientation stands in for the preprocessing's MONAI
    ``Orientation("RAS")``, whose equivalence tests/data/test_preprocess.py checks; MONAI's
    import alone would triple this file's run time.
    """
    images = tiny_subject_images()  # brain ellipsoid centred in a 20 x 24 x 18 grid, RAS
    seg = np.zeros((20, 24, 18), np.uint8)
    seg[lesion_x - 2 : lesion_x + 2, 10:14, 7:11] = 3  # the brain is centred at x = 10
    images["seg"] = nib.Nifti1Image(seg, images["t1_pre"].affine)
    world_x = (images["seg"].affine @ [lesion_x, 12, 9, 1])[0]
    centre_x = (images["seg"].affine @ [10, 12, 9, 1])[0]
    assert (world_x < centre_x) == (side == "left")
    stored = {k: _stored_radiologically(v) for k, v in images.items()}
    assert nib.aff2axcodes(stored["seg"].affine) == ("L", "A", "S")
    ras = {k: nib.as_closest_canonical(v) for k, v in stored.items()}
    assert nib.aff2axcodes(ras["seg"].affine) == ("R", "A", "S")
    volumes = SubjectVolumes(
        arrays={
            k: ras[k].get_fdata(dtype=np.float32) / 500 - 1
            if k in MODALITIES
            else np.asarray(ras[k].dataobj)
            for k in (*MODALITIES, "seg", "tissue")
        },
        voxel_mm=(2.0, 2.0, 2.0),
    )
    bundle = extract_slices(
        {"P-00009-000": volumes}, SliceConfig(size=24, min_brain_fraction=0.1), "test"
    )
    _, table = export_captioned_slices({"test": bundle}, ExportConfig(every_nth_slice=1))
    lesion_rows = table[table["n_metastases"] > 0]
    assert len(lesion_rows) >= 2 * 3  # the lesion's slices, both modalities
    assert set(lesion_rows["side"]) == {side}
    assert all(f"in the {side} " in text for text in lesion_rows["text"])
