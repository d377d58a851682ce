"""Offline image-classification tasks built from the assets in ASSETS.md.

Each asset is converted once into `$RETAIN_CACHE/data/<name>-v1.npz` (numpy arrays only,
never a pickle) with fixed splits drawn by a seeded permutation:

| task           | source                          | classes | pretrain | train | val  | test   |
|----------------|---------------------------------|---------|----------|-------|------|--------|
| fashion-mnist  | Debian dataset-fashion-mnist    | 10      | 50,000   | 8,000 | 2,000| 10,000 |
| animal-mnist   | pip animal-mnist                | 10      | -        | 7,000 | 1,000| 2,000  |
| easyvqa-shape  | pip easy-vqa (shape of the item)| 3       | 75%      | 15%   | 10%  | test   |
| easyvqa-color  | pip easy-vqa (its colour)       | 8       | 75%      | 15%   | 10%  | test   |
| textile        | pip conformal-clip-data         | 3       | -        | 1,200 | 300  | 500    |
| digits         | scikit-learn load_digits        | 10      | -        | 1,000 | 297  | 500    |

easy-VQA keeps the images whose questions determine both their shape and colour (about
93% of its 4,000 train and 1,000 test images); percentages are of the kept train images.
The `pretrain` split is what retain's zoo may pre-train on; the other datasets have none
and serve as downstream tasks.
"""

from __future__ import annotations

import gzip
import importlib.util
import os
from pathlib import Path
from typing import Callable

import numpy as np

from retain.data.task import ImageSplit, Task
from retain.errors import RetainError
from retain.io import atomic_write
from retain.paths import cache_dir

VERSION = 1
SPLIT_SEED = 0
FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")

FASHION_CLASSES = ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot"]
# The package's description lists the classes alphabetically; its labels 0..9 follow that order.
ANIMAL_CLASSES = ["bear", "bird", "cat", "cow", "dog", "elephant", "giraffe", "horse", "sheep", "zebra"]
SHAPES = ["circle", "rectangle", "triangle"]
COLORS = ["black", "blue", "brown", "gray", "green", "red", "teal", "yellow"]
TEXTILE_CLASSES = ["nominal textile", "textile with a local defect", "textile with a global defect"]
DIGIT_CLASSES = [str(i) for i in range(10)]

TEMPLATES = {
    "fashion-mnist": ["a photo of a {}.", "a picture of a {}, a type of clothing.", "a black and white photo of a {}."],
    "animal-mnist": ["a silhouette of a {}.", "a photo of a {}.", "a black and white drawing of a {}."],
    "easyvqa-shape": ["a {}.", "a photo of a {}.", "a drawing of a {}."],
    "easyvqa-color": ["a {} shape.", "a photo of a {} shape.", "something coloured {}."],
    "textile": ["a photo of a {}.", "a close-up of a {}."],
    "digits": ["a photo of the number {}.", "a handwritten digit {}.", "the number {}."],
}


def _permute(n: int) -> np.ndarray:
    return np.random.default_rng(SPLIT_SEED).permutation(n)


def _carve(images, labels, sizes: dict[str, int], captions=None) -> dict[str, dict]:
    """Split arrays by a fixed permutation into consecutive chunks of the given sizes."""
    order = _permute(len(labels))
    out, start = {}, 0
    for name, size in sizes.items():
        idx = np.sort(order[start:start + size])
        out[name] = {"images": images[idx], "labels": labels[idx], "source_index": idx}
        if captions is not None:
            out[name]["captions"] = captions[idx]
        start += size
    return out


# ---- converters: each returns (class_names, {split: arrays}) --------------------------
def _read_idx(path: Path, offset: int) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        return np.frombuffer(f.read(), dtype=np.uint8, offset=offset)


def convert_fashion_mnist():
    files = {k: FASHION_DIR / f for k, f in {
        "xtr": "train-images-idx3-ubyte.gz", "ytr": "train-labels-idx1-ubyte.gz",
        "xte": "t10k-images-idx3-ubyte.gz", "yte": "t10k-labels-idx1-ubyte.gz"}.items()}
    missing = [str(p) for p in files.values() if not p.exists()]
    if missing:
        raise RetainError(
            f"Fashion-MNIST is missing ({missing[0]}): install it with `apt-get install dataset-fashion-mnist` "
            "(as root), or leave fashion-mnist out of the config."
        )
    xtr = _read_idx(files["xtr"], 16).reshape(-1, 28, 28, 1)
    ytr = _read_idx(files["ytr"], 8).astype(np.int64)
    splits = _carve(xtr, ytr, {"pretrain": 50000, "train": 8000, "val": 2000})
    splits["test"] = {"images": _read_idx(files["xte"], 16).reshape(-1, 28, 28, 1),
                      "labels": _read_idx(files["yte"], 8).astype(np.int64),
                      "source_index": np.arange(10000) + 60000}
    return FASHION_CLASSES, splits


def convert_animal_mnist():
    import pickle

    spec = importlib.util.find_spec("animal_mnist")
    if spec is None or not spec.submodule_search_locations:
        raise RetainError("Animal-MNIST is not installed: pip install --no-deps animal-mnist")
    root = Path(spec.submodule_search_locations[0]) / "data" / "Animal_MNIST"
    # The package's own gzip pickles (numpy arrays); read once here, cached as .npz.
    with gzip.open(root / "animal_data_version_3.gz", "rb") as f:
        x = np.asarray(pickle.load(f), dtype=np.uint8)
    with gzip.open(root / "animal_label_version_3.gz", "rb") as f:
        y = np.asarray(pickle.load(f), dtype=np.int64)
    return ANIMAL_CLASSES, _carve(x.reshape(-1, 28, 28, 1), y, {"train": 7000, "val": 1000, "test": 2000})


def _easyvqa_split(train: bool):
    import easy_vqa
    from PIL import Image

    questions, answers, image_ids = easy_vqa.get_train_questions() if train else easy_vqa.get_test_questions()
    paths = easy_vqa.get_train_image_paths() if train else easy_vqa.get_test_image_paths()
    shape, color = {}, {}
    for q, a, i in zip(questions, answers, image_ids):
        # Every open question's answer is the item's shape or colour ("what color is the
        # circle?" also names the shape, "what is the red shape?" the colour).
        words = q.rstrip("?").split()
        if a in SHAPES:
            shape[i] = a
            color.update({i: w for w in words if w in COLORS})
        elif a in COLORS:
            color[i] = a
            shape.update({i: w for w in words if w in SHAPES})
        else:  # yes/no: "is no red shape present?" -> no -> the shape is red
            present = (a == "yes") != bool({"no", "not"} & set(words))
            if present:
                shape.update({i: w for w in words if w in SHAPES})
                color.update({i: w for w in words if w in COLORS})
    # About 7% of the images have only questions that leave their shape or colour open
    # ("is no red shape present? yes"); they are left out rather than guessed.
    ids = sorted(i for i in paths if i in shape and i in color)
    images = np.stack([np.asarray(Image.open(paths[i]).convert("RGB"), dtype=np.uint8) for i in ids])
    return images, np.array([SHAPES.index(shape[i]) for i in ids]), np.array([COLORS.index(color[i]) for i in ids])


def _convert_easyvqa(attribute: str):
    try:
        import easy_vqa  # noqa: F401
    except ImportError as e:
        raise RetainError("easy-VQA is not installed: pip install easy-vqa") from e
    xtr, str_, ctr = _easyvqa_split(True)
    xte, ste, cte = _easyvqa_split(False)
    rng = np.random.default_rng(SPLIT_SEED)
    wordings = ["a {c} {s}.", "a photo of a {c} {s}.", "a {c} {s} shape.", "a drawing of a {c} {s}."]
    caps_tr = np.array([wordings[rng.integers(4)].format(c=COLORS[c], s=SHAPES[s]) for s, c in zip(str_, ctr)])
    caps_te = np.array([f"a {COLORS[c]} {SHAPES[s]}." for s, c in zip(ste, cte)])
    ytr, yte, names = (str_, ste, SHAPES) if attribute == "shape" else (ctr, cte, COLORS)
    n_pre, n_train = int(0.75 * len(ytr)), int(0.15 * len(ytr))
    sizes = {"pretrain": n_pre, "train": n_train, "val": len(ytr) - n_pre - n_train}
    splits = _carve(xtr, ytr.astype(np.int64), sizes, caps_tr)
    splits["test"] = {"images": xte, "labels": yte.astype(np.int64), "captions": caps_te,
                      "source_index": np.arange(len(yte)) + len(ytr)}
    return names, splits


def convert_textile():
    try:
        import conformal_clip_data as ccd
    except ImportError as e:
        raise RetainError("The textile images are not installed: pip install conformal-clip-data") from e
    from PIL import Image

    images, labels = [], []
    for label, folder in enumerate((ccd.nominal_dir(), ccd.local_dir(), ccd.global_dir())):
        for name in sorted(os.listdir(folder)):
            with Image.open(os.path.join(folder, name)) as im:
                images.append(np.asarray(im.convert("L").resize((64, 64), Image.BILINEAR), dtype=np.uint8))
            labels.append(label)
    x = np.stack(images)[..., None]
    return TEXTILE_CLASSES, _carve(x, np.array(labels, dtype=np.int64), {"train": 1200, "val": 300, "test": 500})


def convert_digits():
    from sklearn.datasets import load_digits

    d = load_digits()
    x = np.clip(d.images * (255.0 / 16.0), 0, 255).round().astype(np.uint8)[..., None]
    return DIGIT_CLASSES, _carve(x, d.target.astype(np.int64), {"train": 1000, "val": 297, "test": 500})


CONVERTERS: dict[str, Callable] = {
    "fashion-mnist": convert_fashion_mnist,
    "animal-mnist": convert_animal_mnist,
    "easyvqa-shape": lambda: _convert_easyvqa("shape"),
    "easyvqa-color": lambda: _convert_easyvqa("color"),
    "textile": convert_textile,
    "digits": convert_digits,
}


def cache_path(name: str) -> Path:
    return cache_dir("data") / f"{name}-v{VERSION}.npz"


def load_offline(name: str) -> Task:
    """The offline task `name`, converted into the cache on first use."""
    path = cache_path(name)
    if not path.exists():
        class_names, splits = CONVERTERS[name]()
        arrays = {"class_names": np.array(class_names)}
        for split, fields in splits.items():
            for key, value in fields.items():
                arrays[f"{split}/{key}"] = np.asarray(value)
        atomic_write(path, lambda tmp: savez(tmp, arrays))
    with np.load(path, allow_pickle=False) as z:
        names = [str(c) for c in z["class_names"]]
        splits = {}
        for key in z.files:
            if key.endswith("/images"):
                s = key.split("/")[0]
                caps = [str(c) for c in z[f"{s}/captions"]] if f"{s}/captions" in z.files else None
                splits[s] = ImageSplit(z[key], z[f"{s}/labels"].astype(np.int64), caps)
    return Task(name, names, splits, list(TEMPLATES[name]), source=f"offline:{name}")


def source_indices(name: str) -> dict[str, np.ndarray]:
    """For each split, the positions of its items in the asset (to check splits are disjoint)."""
    load_offline(name)
    with np.load(cache_path(name), allow_pickle=False) as z:
        return {k.split("/")[0]: z[k] for k in z.files if k.endswith("/source_index")}


def savez(tmp: str, arrays: dict) -> None:
    with open(tmp, "wb") as f:
        np.savez(f, **arrays)
