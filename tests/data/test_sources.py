"""User sources: an image folder the test writes, and a datasets folder saved to disk."""

import os

from pathlib import Path

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
    with pytest.raises(RetainError, match=r"gone\.png is a symbolic link to .*nowhere\.png, which does not exist"):
        load_task(f"folder:{tmp_path / 'd'}")


# ---- pixels: bit depth and transparency ------------------------------------------------
GRADIENT = np.linspace(0, 65535, 16 * 16).round().astype(np.uint16).reshape(16, 16)


def _splits_of(root, image, name="g.png"):
    """root/{train,val,test}/x/<name>, each the same image, so no split is carved."""
    for split in ("train", "val", "test"):
        (root / split / "x").mkdir(parents=True)
        image.save(root / split / "x" / name)


@pytest.mark.parametrize("name, make", [
    ("g.png", lambda: Image.fromarray(GRADIENT)),  # I;16
    ("g.tif", lambda: Image.fromarray(GRADIENT.astype(">u2"))),  # I;16B
    ("g.tif", lambda: Image.fromarray(GRADIENT.astype(np.int32))),  # I, 32-bit integer holding 16-bit values
])
def test_16_bit_images_are_scaled_by_their_range_not_clipped(tmp_path, name, make):
    _splits_of(tmp_path / "d", make(), name)
    got = load_task(f"folder:{tmp_path / 'd'}").split("test").images[0, ..., 0]
    expected = np.floor(GRADIENT.astype(np.float64) * 255 / 65535 + 0.5)  # no ties: v * 255 / 65535 = v / 257
    np.testing.assert_array_equal(got, expected)


def test_float_images_are_read_as_0_to_1_and_other_ranges_refused(tmp_path):
    values = (GRADIENT / 65535).astype(np.float32)
    _splits_of(tmp_path / "d", Image.fromarray(values), "g.tif")
    got = load_task(f"folder:{tmp_path / 'd'}").split("test").images[0, ..., 0]
    np.testing.assert_array_equal(got, np.floor(values.astype(np.float64) * 255 + 0.5))
    _splits_of(tmp_path / "e", Image.fromarray(values * 255), "g.tif")
    with pytest.raises(RetainError, match=r"g\.tif holds values from 0\.0 to 255\.0.*Rescale it to 0\.\.1"):
        load_task(f"folder:{tmp_path / 'e'}")


def _rgba_pixels():
    """A half-transparent red pixel and a fully transparent one hiding green (2 x 2: images are square)."""
    return np.array([[[255, 0, 0, 128], [0, 255, 0, 0]]] * 2, dtype=np.uint8)


@pytest.mark.parametrize("query, bg", [("", (255, 255, 255)), ("?background=black", (0, 0, 0)),
                                       ("?background=%23102030", (16, 32, 48))])
def test_transparency_is_composited_over_the_named_background(tmp_path, query, bg):
    pixels = _rgba_pixels()
    _splits_of(tmp_path / "d", Image.fromarray(pixels, "RGBA"))
    got = load_task(f"folder:{tmp_path / 'd'}{query}").split("test").images[0]
    alpha = pixels[..., 3:] / 255
    expected = np.floor(pixels[..., :3] * alpha + np.array(bg) * (1 - alpha) + 0.5)
    np.testing.assert_array_equal(got, expected)
    if not query:
        assert tuple(got[0, 0]) == (255, 127, 127)  # the example: half-transparent red on white


def test_palette_transparency_is_composited_too(tmp_path):
    im = Image.new("P", (2, 2))
    im.putpalette([0, 255, 0, 255, 0, 0] + [0] * 762)
    im.putdata([0, 1, 0, 1])
    im.info["transparency"] = 0  # palette entry 0 (green) is transparent
    _splits_of(tmp_path / "d", im)
    got = load_task(f"folder:{tmp_path / 'd'}").split("test").images[0]
    np.testing.assert_array_equal(got, [[[255, 255, 255], [255, 0, 0]]] * 2)


def test_unknown_folder_option_and_bad_colour_are_named(tmp_path):
    _write(tmp_path / "d" / "a")
    with pytest.raises(RetainError, match=r"unknown option\(s\) \['backgound'\].*background="):
        load_task(f"folder:{tmp_path / 'd'}?backgound=black")
    with pytest.raises(RetainError, match="background='blurple' is not a colour"):
        load_task(f"folder:{tmp_path / 'd'}?background=blurple")


# ---- folder layout: nothing dropped, no class without images ----------------------------
def test_empty_class_folder_is_named_in_train_and_in_test(tmp_path):
    _write(tmp_path / "d" / "a", n=10)
    (tmp_path / "d" / "b").mkdir()
    with pytest.raises(RetainError, match=r"class folder .*d/b \(class 'b' of .*/d\) has no images "
                                          r"\(it is empty\): add images to it or remove the folder"):
        load_task(f"folder:{tmp_path / 'd'}")
    for cls in ("a", "b"):
        _write(tmp_path / "s" / "train" / cls)
    _write(tmp_path / "s" / "test" / "a")
    (tmp_path / "s" / "test" / "b" / "nested").mkdir(parents=True)
    (tmp_path / "s" / "test" / "b" / "notes.txt").write_text("x")
    with pytest.raises(RetainError, match=r"test/b \(class 'b', test split .* 1 other file\(s\) and the "
                                          r"subfolder\(s\) \['nested'\]"):
        load_task(f"folder:{tmp_path / 's'}")


def test_class_symlinks_are_followed_and_dangling_ones_named(tmp_path):
    _write(tmp_path / "d" / "a")
    _write(tmp_path / "elsewhere" / "b", n=5)
    (tmp_path / "d" / "b").symlink_to(Path("..") / "elsewhere" / "b")
    task = load_task(f"folder:{tmp_path / 'd'}")
    assert task.class_names == ["a", "b"]
    assert sum(int((s.labels == 1).sum()) for s in task.splits.values()) == 5
    (tmp_path / "d" / "c").symlink_to(tmp_path / "elsewhere" / "c")
    with pytest.raises(RetainError, match=r"d/c is a symbolic link to .*elsewhere/c, which does not exist"):
        load_task(f"folder:{tmp_path / 'd'}")


def test_class_missing_from_test_split_is_stated(tmp_path):
    for cls in ("a", "b"):
        _write(tmp_path / "d" / "train" / cls)
    _write(tmp_path / "d" / "test" / "a")
    with pytest.warns(UserWarning, match=r"test split of .* has no folder for the class\(es\) \['b'\]"):
        task = load_task(f"folder:{tmp_path / 'd'}")
    assert set(task.split("test").labels.tolist()) == {0}


def test_class_the_fixed_split_leaves_without_training_images_is_named(tmp_path):
    _write(tmp_path / "d" / "a", n=15)
    _write(tmp_path / "d" / "b", n=1)  # the seed-0 70/10/20 split of 16 items sends item 15 (b's) to val/test
    with pytest.raises(RetainError, match=r"70/10/20 split of .* no training image for the class\(es\) "
                                          r"'b' \(1 image\(s\)"):
        load_task(f"folder:{tmp_path / 'd'}")


def test_stray_images_and_unread_folders_are_named(tmp_path):
    _write(tmp_path / "d" / "a")
    _write(tmp_path / "d" / "b")
    Image.new("RGB", (10, 10)).save(tmp_path / "d" / "loose.png")
    with pytest.raises(RetainError, match=r"loose\.png lies directly in .* outside any class folder"):
        load_task(f"folder:{tmp_path / 'd'}")
    _write(tmp_path / "s" / "train" / "a")
    _write(tmp_path / "s" / "valid" / "a")
    with pytest.raises(RetainError, match=r"also \['valid'\], which retain would not read.*val/"):
        load_task(f"folder:{tmp_path / 's'}")


def test_hidden_folders_are_not_classes(tmp_path):
    _write(tmp_path / "d" / "a")
    _write(tmp_path / "d" / "b")
    (tmp_path / "d" / ".ipynb_checkpoints").mkdir()
    _write(tmp_path / "d" / "a" / ".thumbs", n=1)
    assert load_task(f"folder:{tmp_path / 'd'}").class_names == ["a", "b"]


# ---- fingerprint ---------------------------------------------------------------------
def test_folder_fingerprint_changes_with_the_items_only(tmp_path):
    for cls in ("a", "b"):
        _write(tmp_path / "d" / cls)
    spec = f"folder:{tmp_path / 'd'}"
    first = load_task(spec).fingerprint
    assert len(first) == 64 and load_task(spec).fingerprint == first  # two loads agree
    os.utime(tmp_path / "d" / "a" / "0.png", (1, 1))  # touched, content unchanged
    assert load_task(spec).fingerprint == first
    Image.fromarray(np.full((10, 10, 3), 7, np.uint8)).save(tmp_path / "d" / "b" / "new.png")
    assert load_task(spec).fingerprint != first
    (tmp_path / "d" / "b" / "new.png").unlink()
    (tmp_path / "d" / "b").rename(tmp_path / "d" / "c")  # same images, a class renamed
    assert load_task(spec).fingerprint != first


def test_fingerprint_covers_labels_and_is_computed_once():
    from retain.data import ImageSplit, Task

    images = np.zeros((3, 2, 2, 1), np.uint8)
    task = Task("toy", ["a", "b"], {"train": ImageSplit(images, np.array([0, 1, 1]))})
    other = Task("toy", ["a", "b"], {"train": ImageSplit(images, np.array([0, 1, 0]))})
    assert task.fingerprint != other.fingerprint
    assert task.fingerprint is task.fingerprint
