"""CSVImageDataset on PNG, JPEG, DICOM and NIfTI files written by the tests themselves."""

import csv
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
from kedro.io import DataCatalog
from kedro.io.core import DatasetError
from PIL import Image
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from medgen.datasets import CSVImageDataset, CSVRowError, TensorDataset

# -- independent expectations -------------------------------------------------------------


def unit_range(values: np.ndarray) -> np.ndarray:
    """Per-image min/max to [-1, 1], in float64."""
    values = np.asarray(values, dtype=np.float64)
    return 2 * (values - values.min()) / (values.max() - values.min()) - 1


def dicom_linear_window(x: np.ndarray, center: float, width: float) -> np.ndarray:
    """DICOM PS3.3 C.11.2.1.2.1 LINEAR window to [0, 1]."""
    x = np.asarray(x, dtype=np.float64)
    y = (x - (center - 0.5)) / (width - 1) + 0.5
    y[x <= center - 0.5 - (width - 1) / 2] = 0.0
    y[x > center - 0.5 + (width - 1) / 2] = 1.0
    return y


# -- file makers ------------------------------------------------------------------------


def write_csv(path: Path, rows: list[list[str]], header=("path", "text", "modality")) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def write_png(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def write_dicom(
    path: Path,
    pixels: np.ndarray,
    window: tuple[float, float] | None = (40.0, 400.0),
    frames: int = 1,
    photometric: str = "MONOCHROME2",
) -> Path:
    """Uncompressed explicit VR little endian CT, uint16, slope 2, intercept -1024."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "CT"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.RescaleSlope, ds.RescaleIntercept = 2, -1024
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    if frames > 1:
        ds.NumberOfFrames = frames
    ds.PixelData = np.tile(pixels.astype("<u2"), (frames, 1)).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def write_nifti(path: Path, data: np.ndarray, affine: np.ndarray | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, np.eye(4) if affine is None else affine), path)
    return path


def load(csv_path: Path, **options):
    return CSVImageDataset(filepath=str(csv_path), **options).load()


# 4 x 4 stored values, several above 255: a uint8 cast would wrap them.
DICOM_RAW = np.array(
    [[0, 300, 480, 500], [512, 530, 560, 600], [610, 620, 700, 1000], [2000, 4000, 40000, 65535]]
)
DICOM_HU = DICOM_RAW * 2.0 - 1024.0  # the modality LUT, computed here


# -- readers ------------------------------------------------------------------------------


def test_png_8bit_16bit_and_relative_absolute_paths(tmp_path: Path):
    gray8 = np.arange(16, dtype=np.uint8).reshape(4, 4) * 10
    gray16 = np.array(
        [[0, 1000, 1001, 40000], [65535, 2, 3, 4], [5, 6, 7, 8], [9, 10, 11, 12]], np.uint16
    )
    write_png(tmp_path / "images" / "g8.png", gray8)
    absolute = write_png(tmp_path / "elsewhere" / "g16.png", gray16)
    csv_path = write_csv(
        tmp_path / "images" / "list.csv",
        [["g8.png", "an 8-bit slice", "t1"], [str(absolute), "a 16-bit slice", "t1"]],
    )
    bundle = load(csv_path, size=4)
    images = bundle["images"]
    assert images.dtype == torch.float32 and images.shape == (2, 1, 4, 4)
    np.testing.assert_allclose(images[0, 0], unit_range(gray8), atol=1e-6)
    np.testing.assert_allclose(images[1, 0], unit_range(gray16), atol=1e-6)
    # 16-bit values one apart stay apart (not truncated to 8 bits)
    assert images[1, 0, 0, 2] > images[1, 0, 0, 1]
    assert bundle["row_index"].tolist() == [1, 2]
    assert bundle.metadata["paths"] == ["g8.png", str(absolute)]
    assert bundle.metadata["texts"] == ["an 8-bit slice", "a 16-bit slice"]
    assert bundle.metadata["rejected"] == []


def test_rgb_png_as_rgb_and_as_luma(tmp_path: Path):
    rgb = np.random.default_rng(0).integers(0, 256, (4, 4, 3), dtype=np.uint8)
    write_png(tmp_path / "c.png", rgb)
    csv_path = write_csv(tmp_path / "list.csv", [["c.png", "colour", "photo"]])
    as_rgb = load(csv_path, size=4, color="rgb")["images"][0]
    np.testing.assert_allclose(as_rgb, unit_range(np.moveaxis(rgb, -1, 0)), atol=1e-6)
    as_gray = load(csv_path, size=4)["images"][0, 0]
    luma = rgb @ np.array([0.299, 0.587, 0.114])
    np.testing.assert_allclose(as_gray, unit_range(luma), atol=1e-6)


def test_gray_png_repeated_on_three_channels_in_rgb(tmp_path: Path):
    gray = np.arange(16, dtype=np.uint8).reshape(4, 4)
    write_png(tmp_path / "g.png", gray)
    images = load(write_csv(tmp_path / "l.csv", [["g.png", "t", "m"]]), size=4, color="rgb")
    assert images["images"].shape == (1, 3, 4, 4)
    for channel in range(3):
        np.testing.assert_allclose(images["images"][0, channel], unit_range(gray), atol=1e-6)


def test_jpeg_matches_pillow_decoding(tmp_path: Path):
    gray = np.kron(np.array([[0, 80], [160, 255]], np.uint8), np.ones((8, 8), np.uint8))
    Image.fromarray(gray).save(tmp_path / "a.jpeg", quality=95)
    Image.fromarray(gray).save(tmp_path / "b.JPG", quality=95)
    csv_path = write_csv(tmp_path / "l.csv", [["a.jpeg", "t", "xray"], ["b.JPG", "t", "xray"]])
    images = load(csv_path, size=16)["images"]
    decoded = np.asarray(Image.open(tmp_path / "a.jpeg"), dtype=np.float64)
    np.testing.assert_allclose(images[0, 0], unit_range(decoded), atol=1e-6)
    np.testing.assert_allclose(images[1, 0], images[0, 0])


def test_non_square_is_padded_with_background_then_resized(tmp_path: Path):
    tall = np.full((8, 4), 200, np.uint8)
    tall[:, 2:] = 100
    write_png(tmp_path / "tall.png", tall)
    big = np.zeros((16, 16), np.uint8)
    big[:, 8:] = 255
    write_png(tmp_path / "big.png", big)
    csv_path = write_csv(tmp_path / "l.csv", [["tall.png", "t", "m"], ["big.png", "t", "m"]])
    images = load(csv_path, size=8)["images"]
    expected = np.full((8, 8), -1.0)
    expected[:, 2:6] = unit_range(tall)  # two background columns each side
    np.testing.assert_allclose(images[0, 0], expected, atol=1e-6)
    # downsampled 16 -> 8 (antialiased): the flat halves keep their values
    assert images[1, 0, :, 0].tolist() == [-1.0] * 8
    assert images[1, 0, :, -1].tolist() == [1.0] * 8
    assert images.min() >= -1 and images.max() <= 1


def test_percentiles_clip_outliers(tmp_path: Path):
    values = np.arange(100, dtype=np.uint8).reshape(10, 10)
    write_png(tmp_path / "p.png", values)
    csv_path = write_csv(tmp_path / "l.csv", [["p.png", "t", "m"]])
    image = load(csv_path, size=10, percentiles=(10, 90))["images"][0, 0].numpy()
    low, high = np.percentile(values, (10, 90))
    expected = np.clip(2 * (values - low) / (high - low) - 1, -1, 1)
    np.testing.assert_allclose(image, expected, atol=1e-6)


def test_dicom_applies_modality_lut_then_the_files_window(tmp_path: Path):
    write_dicom(tmp_path / "ct.dcm", DICOM_RAW)
    write_dicom(tmp_path / "IM0001", DICOM_RAW)  # no extension: found by its DICM preamble
    csv_path = write_csv(tmp_path / "l.csv", [["ct.dcm", "a CT", "ct"], ["IM0001", "a CT", "ct"]])
    images = load(csv_path, size=4)["images"]
    expected = unit_range(dicom_linear_window(DICOM_HU, 40.0, 400.0))
    np.testing.assert_allclose(images[0, 0], expected, atol=1e-6)
    np.testing.assert_allclose(images[1, 0], expected, atol=1e-6)
    # stored 512 is 0 HU, inside the window: the exact LUT value, not a uint8 wrap
    assert images[0, 0, 1, 0].item() == pytest.approx(2 * ((0 - 39.5) / 399 + 0.5) - 1, abs=1e-6)


def test_dicom_configured_window_and_no_window(tmp_path: Path):
    write_dicom(tmp_path / "ct.dcm", DICOM_RAW)
    write_dicom(tmp_path / "raw.dcm", DICOM_RAW, window=None)
    csv_path = write_csv(tmp_path / "l.csv", [["ct.dcm", "t", "ct"], ["raw.dcm", "t", "ct"]])
    images = load(csv_path, size=4, dicom_window=[0, 2000])["images"]
    windowed = unit_range(dicom_linear_window(DICOM_HU, 0.0, 2000.0))
    np.testing.assert_allclose(images[0, 0], windowed, atol=1e-6)
    np.testing.assert_allclose(images[1, 0], windowed, atol=1e-6)
    # without any window: min/max of the rescaled values
    plain = load(csv_path, size=4)["images"][1, 0]
    np.testing.assert_allclose(plain, unit_range(DICOM_HU), atol=1e-6)


def test_dicom_monochrome1_is_inverted(tmp_path: Path):
    write_dicom(tmp_path / "m1.dcm", DICOM_RAW, photometric="MONOCHROME1")
    csv_path = write_csv(tmp_path / "l.csv", [["m1.dcm", "t", "xray"]])
    image = load(csv_path, size=4)["images"][0, 0]
    expected = -unit_range(dicom_linear_window(DICOM_HU, 40.0, 400.0))
    np.testing.assert_allclose(image, expected, atol=1e-6)


def _volume(shape=(6, 5, 7), seed=0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 1000, shape).astype(np.float32)


def _expected_axial(volume_ras: np.ndarray, z: int) -> np.ndarray:
    """Rows anterior -> posterior, columns left -> right, padded 5 x 6 -> 6 x 6."""
    plane = unit_range(np.flip(volume_ras[:, :, z].T, axis=0))
    return np.concatenate([plane, np.full((1, 6), -1.0)])


@pytest.mark.parametrize(("rule", "z"), [("middle", 3), (1, 1), (-1, 6)])
def test_nifti_middle_and_fixed_slices(tmp_path: Path, rule, z: int):
    volume = _volume()
    write_nifti(tmp_path / "ras.nii.gz", volume)
    # the same anatomy stored LPS: the reader reorients it to RAS first
    write_nifti(tmp_path / "lps.nii", volume[::-1, ::-1].copy(), np.diag([-1.0, -1, 1, 1]))
    csv_path = write_csv(tmp_path / "l.csv", [["ras.nii.gz", "t", "t1"], ["lps.nii", "t", "t1"]])
    images = load(csv_path, size=6, nifti_slice=rule)["images"]
    np.testing.assert_allclose(images[0, 0], _expected_axial(volume, z), atol=1e-5)
    np.testing.assert_allclose(images[1, 0], _expected_axial(volume, z), atol=1e-5)


def test_nifti_most_label_slice(tmp_path: Path):
    volume = _volume()
    label = np.zeros(volume.shape, np.uint8)
    label[1:3, 1:3, 2] = 1  # 4 voxels
    label[0:4, 0:3, 5] = 2  # 12 voxels: the chosen slice
    write_nifti(tmp_path / "img.nii.gz", volume)
    write_nifti(tmp_path / "seg.nii.gz", label)
    csv_path = write_csv(
        tmp_path / "l.csv",
        [["img.nii.gz", "a lesion", "t1", "seg.nii.gz"]],
        header=("path", "text", "modality", "label_path"),
    )
    bundle = load(csv_path, size=6, nifti_slice="most_label", label_column="label_path")
    np.testing.assert_allclose(bundle["images"][0, 0], _expected_axial(volume, 5), atol=1e-5)
    assert bundle.metadata["extra_columns"] == {"label_path": ["seg.nii.gz"]}


def test_seed_text_header_extra_columns_and_fsspec_url(tmp_path: Path):
    write_png(tmp_path / "data" / "a.png", np.arange(16, dtype=np.uint8).reshape(4, 4))
    csv_path = write_csv(
        tmp_path / "lists" / "captions.csv",
        [
            ["../data/a.png", "first", "t1", "train", "s1"],
            [f"file://{tmp_path}/data/a.png", "second", "flair", "val", "s2"],
        ],
        header=("path", "Text", "modality", "split", "subject"),
    )
    bundle = CSVImageDataset(filepath=f"file://{csv_path}", size=4).load()
    assert bundle.metadata["texts"] == ["first", "second"]
    assert bundle.metadata["modalities"] == ["t1", "flair"]
    assert bundle.metadata["extra_columns"] == {"split": ["train", "val"], "subject": ["s1", "s2"]}
    assert bundle.metadata["source"] == f"file://{csv_path}"
    assert (bundle.metadata["size"], bundle.metadata["color"]) == (4, "grayscale")
    torch.testing.assert_close(bundle["images"][0], bundle["images"][1])


# -- bad rows -----------------------------------------------------------------------------


def _bad_rows(tmp_path: Path) -> tuple[Path, list[tuple[str, str]]]:
    """A CSV with one good row, then one row of each bad kind: (path, reason pattern)."""
    write_png(tmp_path / "good.png", np.arange(16, dtype=np.uint8).reshape(4, 4))
    (tmp_path / "broken.png").write_bytes(b"not a png at all")
    (tmp_path / "scan.bmp").write_bytes(b"BM whatever")
    write_png(tmp_path / "flat.png", np.full((4, 4), 7, np.uint8))
    write_nifti(tmp_path / "4d.nii.gz", np.zeros((4, 4, 3, 2), np.float32))
    write_dicom(tmp_path / "cine.dcm", DICOM_RAW, frames=2)
    nan = np.ones((4, 4, 3), np.float32)
    nan[0, 0, 1] = np.nan
    write_nifti(tmp_path / "nan.nii.gz", nan)
    bad = [
        (["missing.png", "t", "t1"], "missing.png", "file not found"),
        (["broken.png", "t", "t1"], "broken.png", "unreadable image"),
        (["scan.bmp", "t", "t1"], "scan.bmp", "unsupported extension '.bmp'"),
        (["good.png", "  ", "t1"], "good.png", "empty text"),
        (["good.png", "t", "pet"], "good.png", "unknown modality 'pet'"),
        (["good.png", "t", ""], "good.png", "empty modality"),
        (["4d.nii.gz", "t", "t1"], "4d.nii.gz", "4D image NIfTI of shape"),
        (["cine.dcm", "t", "t1"], "cine.dcm", "multi-frame DICOM with 2 frames"),
        (["flat.png", "t", "t1"], "flat.png", "no contrast"),
        (["nan.nii.gz", "t", "t1"], "nan.nii.gz", "NaN or Inf"),
        (["good.png", "t"], "good.png", "2 fields, the header has 3"),
        (["", "t", "t1"], "", "empty path"),
    ]
    csv_path = write_csv(tmp_path / "list.csv", [["good.png", "fine", "t1"]] + [b[0] for b in bad])
    return csv_path, [(path, reason) for _, path, reason in bad]


def test_skip_reports_every_bad_row_and_writes_the_rejected_csv(tmp_path: Path):
    csv_path, expected = _bad_rows(tmp_path)
    rejected_path = tmp_path / "reports" / "rejected.csv"
    bundle = load(csv_path, size=4, modalities=["t1", "t2"], rejected_filepath=str(rejected_path))
    assert bundle["images"].shape == (1, 1, 4, 4)
    assert bundle["row_index"].tolist() == [1]
    rejected = bundle.metadata["rejected"]
    assert [r["row"] for r in rejected] == list(range(2, 2 + len(expected)))
    for record, (path, reason) in zip(rejected, expected, strict=True):
        assert record["path"] == path
        assert reason in record["reason"], record
    frame = CSVImageDataset.rejected_frame(bundle)
    assert list(frame.columns) == ["row", "path", "reason"]
    written = pd.read_csv(rejected_path, keep_default_na=False)
    pd.testing.assert_frame_equal(written, frame)


def test_fail_names_the_row_path_and_reason(tmp_path: Path):
    csv_path, expected = _bad_rows(tmp_path)
    lines = csv_path.read_text().splitlines()
    for offset, (path, reason) in enumerate(expected):
        single = tmp_path / f"single{offset}.csv"
        single.write_text("\n".join([lines[0], lines[1], lines[2 + offset]]) + "\n")
        dataset = CSVImageDataset(
            filepath=str(single), size=4, on_bad_row="fail", modalities=["t1"]
        )
        with pytest.raises(CSVRowError) as caught:
            dataset.load()
        message = str(caught.value)
        assert f"row 2 (line 3), path {path!r}: " in message
        assert reason in message
        assert isinstance(caught.value, DatasetError)
        assert (caught.value.row, caught.value.path) == (2, path)


def test_row_numbers_skip_blank_lines_like_pandas(tmp_path: Path):
    write_png(tmp_path / "a.png", np.arange(16, dtype=np.uint8).reshape(4, 4))
    csv_path = tmp_path / "l.csv"
    csv_path.write_text('path,text,modality\na.png,one,t1\n\na.png,"two\nlines",t1\nno.png,x,t1\n')
    bundle = load(csv_path, size=4)
    assert bundle["row_index"].tolist() == [1, 2]
    assert bundle.metadata["rejected"][0]["row"] == 3
    frame = pd.read_csv(csv_path)
    assert frame.iloc[bundle["row_index"][1].item() - 1]["text"] == "two\nlines"
    with pytest.raises(CSVRowError, match=r"row 3 \(line 6\), path 'no.png': file not found"):
        load(csv_path, size=4, on_bad_row="fail")


def test_nifti_label_problems_are_bad_rows(tmp_path: Path):
    write_nifti(tmp_path / "img.nii.gz", _volume())
    write_nifti(tmp_path / "empty.nii.gz", np.zeros((6, 5, 7), np.uint8))
    write_nifti(tmp_path / "small.nii.gz", np.ones((6, 5, 3), np.uint8))
    csv_path = write_csv(
        tmp_path / "l.csv",
        [
            ["img.nii.gz", "t", "t1", "empty.nii.gz"],
            ["img.nii.gz", "t", "t1", "small.nii.gz"],
            ["img.nii.gz", "t", "t1", ""],
        ],
        header=("path", "text", "modality", "seg"),
    )
    bundle = load(csv_path, size=6, nifti_slice="most_label", label_column="seg")
    reasons = [r["reason"] for r in bundle.metadata["rejected"]]
    assert "no voxel > 0" in reasons[0]
    assert "has shape (6, 5, 3), the image (6, 5, 7)" in reasons[1]
    assert "empty label path in column 'seg'" in reasons[2]
    out_of_range = load(csv_path, size=6, nifti_slice=7).metadata["rejected"]
    assert all("nifti_slice 7 is out of range for 7" in r["reason"] for r in out_of_range)


# -- the dataset contract ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"size": 0}, "size must be a positive integer"),
        ({"color": "rgba"}, "color must be one of"),
        ({"on_bad_row": "ignore"}, "on_bad_row must be one of"),
        ({"dicom_window": [40]}, "dicom_window must be"),
        ({"dicom_window": [40, 0.5]}, "width >= 1"),
        ({"nifti_slice": "top"}, "nifti_slice must be"),
        ({"nifti_slice": "most_label"}, "needs label_column"),
        ({"percentiles": (50, 10)}, "percentiles must satisfy"),
        ({"modalities": "t1"}, "modalities must be a non-empty list"),
    ],
)
def test_invalid_options_are_refused(tmp_path: Path, options, message):
    with pytest.raises(DatasetError, match=message):
        CSVImageDataset(filepath=str(tmp_path / "l.csv"), **options)


def test_whole_file_errors(tmp_path: Path):
    with pytest.raises(DatasetError, match="CSV file not found"):
        load(tmp_path / "none.csv")
    no_modality = write_csv(tmp_path / "a.csv", [["x.png", "t"]], header=("path", "text"))
    with pytest.raises(DatasetError, match=r"missing column\(s\) \['modality'\]"):
        load(no_modality)
    csv_path = write_csv(tmp_path / "b.csv", [])
    with pytest.raises(DatasetError, match="label_column 'seg' is not in the header"):
        load(csv_path, label_column="seg")
    empty = load(csv_path, size=8, color="rgb")
    assert empty["images"].shape == (0, 3, 8, 8) and len(empty) == 0


def test_read_only_describe_exists_and_catalog(tmp_path: Path):
    write_png(tmp_path / "a.png", np.arange(16, dtype=np.uint8).reshape(4, 4))
    csv_path = write_csv(tmp_path / "l.csv", [["a.png", "t", "t1"]])
    catalog = DataCatalog.from_config(
        {"captions": {"type": "medgen.datasets.CSVImageDataset", "filepath": str(csv_path)}}
    )
    assert catalog.exists("captions")
    bundle = catalog.load("captions")
    assert bundle["images"].shape == (1, 1, 64, 64)
    dataset = CSVImageDataset(filepath=str(csv_path), dicom_window=[40, 400])
    with pytest.raises(DatasetError, match="read-only"):
        dataset.save(bundle)
    described = dataset._describe()
    assert described["dicom_window"] == (40.0, 400.0) and described["size"] == 64
    assert not CSVImageDataset(filepath=str(tmp_path / "none.csv")).exists()
    # the metadata is plain JSON: the bundle can be cached with TensorDataset
    cache = TensorDataset(filepath=str(tmp_path / "cache.safetensors"))
    cache.save(bundle)
    assert cache.load().metadata == bundle.metadata


def test_renamed_columns_read_a_ratings_csv(tmp_path: Path):
    """A ratings CSV (image_path, prompt, ...) goes through the same reader, extras kept."""
    write_png(tmp_path / "a.png", np.arange(64, dtype=np.uint8).reshape(8, 8))
    header = ("image_path", "rating", "modality", "expert_level", "prompt")
    csv_path = write_csv(tmp_path / "ratings.csv", [["a.png", "3", "flair", "2", "Brain"]], header)
    bundle = load(csv_path, size=8, path_column="image_path", text_column="prompt")
    assert bundle.metadata["texts"] == ["Brain"]
    assert bundle.metadata["extra_columns"] == {"rating": ["3"], "expert_level": ["2"]}
    with pytest.raises(DatasetError, match=r"missing column\(s\) \['image_path'\]"):
        load(
            write_csv(tmp_path / "plain.csv", [["a.png", "t", "flair"]]),
            path_column="image_path",
        )
    with pytest.raises(DatasetError, match="must differ"):
        CSVImageDataset(filepath=str(csv_path), path_column="text")
