"""Kedro datasets for medgen: NIfTI images, subject folders, and tensor bundles."""

from medgen.datasets.csv_image_dataset import CSVImageDataset, CSVRowError
from medgen.datasets.nifti_dataset import NiftiDataset, NiftiReadError
from medgen.datasets.optional_dataset import OptionalDataset
from medgen.datasets.subject_folder_dataset import (
    LazySubject,
    SubjectFolderDataset,
    SubjectPayload,
    SubjectRecord,
    fingerprint_of,
)
from medgen.datasets.tensor_dataset import TensorBundle, TensorDataset

__all__ = [
    "CSVImageDataset",
    "CSVRowError",
    "LazySubject",
    "NiftiDataset",
    "NiftiReadError",
    "OptionalDataset",
    "SubjectFolderDataset",
    "SubjectPayload",
    "SubjectRecord",
    "TensorBundle",
    "TensorDataset",
    "fingerprint_of",
]
