"""User sources: an image folder the test writes, and a datasets folder saved to disk."""

import numpy as np
import pytest
from PIL import Image

from retain.data import load_task
from retain.errors import RetainError


def _write(folder, n=5, size=10, mode="RGB"):
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        arr = np.full((size, size, 3), (25 * i) % 256, dtype=np.uint8)
        Image.fromarray(arr).convert(mode).save(folder / f"{i}.png")


def test_folder_with_class_dirs_is_split(tmp_path):
    for cls in ("golden_retriever", "cat"):
        _write(tmp_path / "pets" / cls, n=10)
    task = load_task(f"folder:{tmp_path / 'pets'}")
    assert task.class_names == ["cat", "golden retriever"]
    assert {k: len(v) for k, v in task.splits.items()} == {"train": 14, "val": 2, "test": 4}
    assert task.split("train").images.shape[1:] == (10, 10, 3)


def test_folder_with_split_dirs(tmp_path):
    for split in ("train", "test"):
        for cls in ("a", "b"):
            _write(tmp_path / "d" / split / cls, n=5, mode="L")
    task = load_task(f"folder:{tmp_path / 'd'}")
    assert len(task.split("test")) == 10 and len(task.split("train")) + len(task.split("val")) == 10
    assert task.split("test").images.shape[-1] == 1


def test_corrupt_image_is_named(tmp_path):
    _write(tmp_path / "d" / "a")
    _write(tmp_path / "d" / "b")
    (tmp_path / "d" / "b" / "bad.jpg").write_bytes(b"\x00garbage")
    with pytest.raises(RetainError, match=r"bad\.jpg cannot be read"):
        load_task(f"folder:{tmp_path / 'd'}")


def test_class_outside_training_classes_is_named(tmp_path):
    _write(tmp_path / "d" / "train" / "a")
    _write(tmp_path / "d" / "test" / "a")
    _write(tmp_path / "d" / "test" / "zebra")
    with pytest.raises(RetainError, match="zebra"):
        load_task(f"folder:{tmp_path / 'd'}")


def test_empty_split_and_missing_folder(tmp_path):
    _write(tmp_path / "d" / "train" / "a")
    (tmp_path / "d" / "test" / "a").mkdir(parents=True)
    with pytest.raises(RetainError, match="test split .* has no images"):
        load_task(f"folder:{tmp_path / 'd'}")
    with pytest.raises(RetainError, match="does not exist"):
        load_task(f"folder:{tmp_path / 'nope'}")


def test_hf_dataset_saved_to_disk(tmp_path):
    import datasets

    rng = np.random.default_rng(0)
    feats = datasets.Features({"img": datasets.Image(), "y": datasets.ClassLabel(names=["red_car", "bus"])})

    def make(n):
        return datasets.Dataset.from_dict(
            {"img": [Image.fromarray(rng.integers(0, 255, (12, 12, 3), dtype=np.uint8)) for _ in range(n)],
             "y": list(rng.integers(0, 2, n))}, features=feats)

    datasets.DatasetDict({"train": make(20), "test": make(6)}).save_to_disk(tmp_path / "ds")
    task = load_task(f"hf:{tmp_path / 'ds'}")
    assert task.class_names == ["red car", "bus"]
    assert len(task.split("test")) == 6 and len(task.split("train")) + len(task.split("val")) == 20
    assert task.split("train").images.shape[1:] == (12, 12, 3)


def test_hf_unreachable_id_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(RetainError, match="nobody/no-such-dataset.*network"):
        load_task("hf:nobody/no-such-dataset")


def test_missing_image_file_is_named(tmp_path):
    _write(tmp_path / "d" / "a")
    _write(tmp_path / "d" / "b")
    (tmp_path / "d" / "b" / "gone.png").symlink_to(tmp_path / "nowhere.png")  # listed, but absent
    with pytest.raises(RetainError, match=r"gone\.png cannot be read"):
        load_task(f"folder:{tmp_path / 'd'}")
