import io
from pathlib import Path

import pytest
import torch
from kedro.io.core import DatasetError

from medgen.datasets import TensorBundle, TensorDataset


def _bundle() -> TensorBundle:
    generator = torch.Generator().manual_seed(0)
    return TensorBundle(
        tensors={
            "images": torch.rand(5, 2, 8, 8, generator=generator) * 2 - 1,
            "seg": torch.randint(0, 4, (5, 1, 8, 8), generator=generator, dtype=torch.uint8),
            "subject_index": torch.arange(5),
        },
        metadata={"modalities": ["t1_pre", "t1_gd"], "split": "train", "size": 8},
    )


@pytest.mark.parametrize("name", ["bundle.safetensors", "bundle.pt"])
def test_round_trip_is_exact(tmp_path: Path, name: str):
    bundle = _bundle()
    dataset = TensorDataset(filepath=str(tmp_path / name))
    dataset.save(bundle)
    loaded = dataset.load()
    assert loaded.metadata == bundle.metadata
    assert sorted(loaded.tensors) == sorted(bundle.tensors)
    for key, tensor in bundle.tensors.items():
        assert loaded[key].dtype == tensor.dtype
        assert torch.equal(loaded[key], tensor)
    assert len(loaded) == 5


def test_non_contiguous_views_are_saved_by_value(tmp_path: Path):
    base = torch.arange(24.0).reshape(4, 6)
    bundle = TensorBundle({"view": base.t(), "same_storage": base[:2]})
    dataset = TensorDataset(filepath=str(tmp_path / "views.safetensors"))
    dataset.save(bundle)
    loaded = dataset.load()
    assert torch.equal(loaded["view"], base.t())
    assert torch.equal(loaded["same_storage"], base[:2])


class Payload:
    """Anything that is not a tensor or a primitive needs full pickle to load."""


def test_torch_format_refuses_pickled_code(tmp_path: Path):
    buffer = io.BytesIO()
    torch.save({"tensors": {"x": torch.zeros(1)}, "metadata": "{}", "evil": Payload()}, buffer)
    path = tmp_path / "evil.pt"
    path.write_bytes(buffer.getvalue())
    with pytest.raises(DatasetError, match="evil.pt: unreadable torch file"):
        TensorDataset(filepath=str(path)).load()


def test_rejects_non_bundles_and_bad_format(tmp_path: Path):
    with pytest.raises(DatasetError, match="TensorBundle"):
        TensorDataset(filepath=str(tmp_path / "x.safetensors")).save({"x": torch.zeros(1)})
    with pytest.raises(DatasetError, match="format must be"):
        TensorDataset(filepath=str(tmp_path / "x.bin"), format="numpy")


def test_bundle_length_requires_agreeing_first_dimension():
    with pytest.raises(ValueError, match="disagree"):
        len(TensorBundle({"a": torch.zeros(3, 1), "b": torch.zeros(4)}))


def test_fingerprint_tracks_values_shapes_keys_and_optionally_metadata():
    from medgen.datasets import TensorBundle

    a = TensorBundle({"x": torch.arange(6.0), "n": torch.tensor(3)}, {"k": 1})
    same = TensorBundle({"n": torch.tensor(3), "x": torch.arange(6.0)}, {"k": 2})
    assert a.fingerprint() == same.fingerprint()  # key order and metadata do not matter ...
    assert a.fingerprint(with_metadata=True) != same.fingerprint(
        with_metadata=True
    )  # ... unless asked
    changed = TensorBundle({"x": torch.arange(6.0).flip(0), "n": torch.tensor(3)})
    reshaped = TensorBundle({"x": torch.arange(6.0).view(2, 3), "n": torch.tensor(3)})
    assert len({a.fingerprint(), changed.fingerprint(), reshaped.fingerprint()}) == 3
    assert a.fingerprint(["x"]) != a.fingerprint()
