"""Offline tasks: splits, shapes, labels, determinism, the cache, disjoint splits."""

import numpy as np
import pytest

from retain.data import list_tasks, load_task
from retain.data.offline import cache_path, source_indices
from retain.data.task import ImageSplit, Task
from retain.errors import RetainError

EXPECTED = {  # name: (classes, image shape, {split: size})
    "digits": (10, (8, 8, 1), {"train": 1000, "val": 297, "test": 500}),
    "animal-mnist": (10, (28, 28, 1), {"train": 7000, "val": 1000, "test": 2000}),
    "textile": (3, (64, 64, 1), {"train": 1200, "val": 300, "test": 500}),
    "fashion-mnist": (10, (28, 28, 1), {"pretrain": 50000, "train": 8000, "val": 2000, "test": 10000}),
    "easyvqa-shape": (3, (64, 64, 3), None),
    "easyvqa-color": (8, (64, 64, 3), None),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_offline_task_shape_and_splits(name):
    classes, shape, sizes = EXPECTED[name]
    task = load_task(name)
    assert task.num_classes == classes and len(task.templates) >= 2
    assert all("{}" in t for t in task.templates)
    for split in task.splits.values():
        assert split.images.dtype == np.uint8 and split.images.shape[1:] == shape
        assert split.labels.min() >= 0 and split.labels.max() < classes
    if sizes:
        assert {k: len(v) for k, v in task.splits.items()} == sizes
    # every class appears in the test split
    assert len(np.unique(task.split("test").labels)) == classes
    # splits are disjoint subsets of the asset
    idx = source_indices(name)
    seen = np.concatenate(list(idx.values()))
    assert len(np.unique(seen)) == len(seen)


def test_easyvqa_tasks_share_images_and_have_captions():
    shape, color = load_task("easyvqa-shape"), load_task("easyvqa-color")
    for s in ("pretrain", "train", "val", "test"):
        np.testing.assert_array_equal(shape.split(s).images, color.split(s).images)
    caps = shape.split("pretrain").captions
    labels = shape.split("pretrain").labels
    colors = color.split("pretrain").labels
    assert all(shape.class_names[y] in c and color.class_names[k] in c for c, y, k in zip(caps, labels, colors))


def test_second_load_reads_the_cache_and_is_identical():
    a = load_task("digits")
    path = cache_path("digits")
    mtime = path.stat().st_mtime_ns
    b = load_task("digits")
    assert path.stat().st_mtime_ns == mtime
    np.testing.assert_array_equal(a.split("train").images, b.split("train").images)
    np.testing.assert_array_equal(a.split("test").labels, b.split("test").labels)
    with np.load(path, allow_pickle=False) as z:  # numpy arrays only, no pickled objects
        assert all(z[k].dtype != object for k in z.files)


def test_unknown_task_suggests():
    with pytest.raises(RetainError, match="Did you mean 'digits'"):
        load_task("digitz")
    assert "fashion-mnist" in list_tasks()


def _split(n, labels):
    return ImageSplit(np.zeros((n, 4, 4, 1), np.uint8), np.asarray(labels))


def test_validate_names_the_bad_item():
    task = Task("toy", ["a", "b"], {"train": _split(3, [0, 1, 5]), "test": _split(1, [0])})
    with pytest.raises(RetainError, match=r"Item 2 of the task 'toy', split 'train' has label 5"):
        task.validate()
    empty = Task("toy", ["a", "b"], {"train": _split(0, []), "test": _split(1, [0])})
    with pytest.raises(RetainError, match="split 'train' is empty"):
        empty.validate()
    with pytest.raises(RetainError, match="has no 'val' split"):
        Task("toy", ["a"], {"train": _split(1, [0])}).split("val")


def test_subset_is_fixed_and_bounded():
    s = _split(50, np.arange(50) % 2)
    a, b = s.subset(10, seed=3), s.subset(10, seed=3)
    assert len(a) == 10
    np.testing.assert_array_equal(a.labels, b.labels)
    assert s.subset(None) is s and s.subset(100) is s
