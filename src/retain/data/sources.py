"""User data sources: Hugging Face `datasets` and image folders.

`hf:<id>` loads a hub dataset (`datasets.load_dataset`) or a folder written by
`Dataset.save_to_disk`; the image column is the one with an `Image` feature and the
label column the one with a `ClassLabel` feature (or name them: `hf:<id>?image=img&label=y`).
`folder:<root>` reads `root/<split>/<class>/*` or `root/<class>/*` (then split 70/10/20
with a fixed seed). Every bad item is an error that names it: nothing is skipped silently.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qs

import numpy as np

from retain.data.task import ImageSplit, Task
from retain.errors import RetainError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
SPLIT_SEED = 0


def _to_array(image, size: int, where: str) -> np.ndarray:
    """A PIL image -> uint8 (size, size, 1 or 3)."""
    from PIL import Image

    try:
        mode = "L" if image.mode in ("1", "L", "I", "I;16", "F") else "RGB"
        image = image.convert(mode).resize((size, size), Image.BILINEAR)
    except Exception as e:  # decoding happens lazily in PIL
        raise RetainError(f"The image {where} cannot be read ({e}): remove or replace it.") from e
    arr = np.asarray(image, dtype=np.uint8)
    return arr[..., None] if arr.ndim == 2 else arr


def _stack(arrays: list[np.ndarray]) -> np.ndarray:
    if any(a.shape[-1] == 3 for a in arrays):
        arrays = [np.repeat(a, 3, axis=-1) if a.shape[-1] == 1 else a for a in arrays]
    return np.stack(arrays)


def _carve(n: int, fractions=(0.7, 0.1, 0.2)) -> dict[str, np.ndarray]:
    order = np.random.default_rng(SPLIT_SEED).permutation(n)
    a, b = int(round(fractions[0] * n)), int(round((fractions[0] + fractions[1]) * n))
    return {"train": np.sort(order[:a]), "val": np.sort(order[a:b]), "test": np.sort(order[b:])}


# ---- image folders -------------------------------------------------------------------
def load_image_folder(root: str, size: int | None = None, max_size: int = 224) -> Task:
    """A Task from `root/<split>/<class>/*` or `root/<class>/*`; class names from folder names."""
    from PIL import Image

    base = Path(root).expanduser()
    if not base.is_dir():
        raise RetainError(f"The image folder {base} does not exist.")
    split_dirs = {s: base / s for s in ("train", "val", "test") if (base / s).is_dir()}
    layout = split_dirs or {"all": base}
    if "train" not in layout and "all" not in layout:
        raise RetainError(f"The image folder {base} has split folders but no train/ folder.")
    class_root = layout.get("train", base)
    classes = sorted(d.name for d in class_root.iterdir() if d.is_dir())
    if not classes:
        raise RetainError(f"The image folder {class_root} has no class folders (expected {class_root}/<class>/<image>).")
    files: dict[str, list[tuple[Path, int]]] = {}
    for split, d in layout.items():
        items = []
        for cls_dir in sorted(p for p in d.iterdir() if p.is_dir()):
            if cls_dir.name not in classes:
                raise RetainError(
                    f"The folder {cls_dir} names class {cls_dir.name!r}, which is not among the training "
                    f"classes {classes}: rename it or add {class_root / cls_dir.name}."
                )
            label = classes.index(cls_dir.name)
            items += [(f, label) for f in sorted(cls_dir.iterdir()) if f.suffix.lower() in IMAGE_SUFFIXES]
        if not items:
            raise RetainError(f"The {split} split of {base} ({d}) has no images.")
        files[split] = items
    if size is None:
        first = files[next(iter(files))][0][0]
        try:
            with Image.open(first) as im:
                size = min(max(im.size), max_size)
        except Exception as e:
            raise RetainError(f"The image {first} cannot be read ({e}): remove or replace it.") from e
    arrays, labels = {}, {}
    for split, items in files.items():
        imgs = []
        for path, _ in items:
            try:
                with Image.open(path) as im:
                    imgs.append(_to_array(im, size, str(path)))
            except RetainError:
                raise
            except Exception as e:
                raise RetainError(f"The image {path} cannot be read ({e}): remove or replace it.") from e
        arrays[split] = _stack(imgs)
        labels[split] = np.array([lab for _, lab in items], dtype=np.int64)
    if "all" in arrays:
        idx = _carve(len(labels["all"]))
        splits = {s: ImageSplit(arrays["all"][i], labels["all"][i]) for s, i in idx.items()}
    else:
        splits = {s: ImageSplit(arrays[s], labels[s]) for s in arrays}
        if "val" not in splits:
            idx = _carve(len(splits["train"]), (0.9, 0.1, 0.0))
            tr = splits["train"]
            splits["train"], splits["val"] = (ImageSplit(tr.images[idx["train"]], tr.labels[idx["train"]]),
                                              ImageSplit(tr.images[idx["val"]], tr.labels[idx["val"]]))
    names = [c.replace("_", " ") for c in classes]
    return Task(f"folder:{base}", names, splits, source=f"folder:{base}")


# ---- Hugging Face datasets -----------------------------------------------------------
def dataset_rows(source: str, split: str, config: str | None, what: str):
    """One split of a `datasets` hub id or `save_to_disk` folder, for rows of text."""
    try:
        if Path(source).is_dir():
            from datasets import load_from_disk

            data = load_from_disk(source)
            return data[split] if hasattr(data, "keys") else data
        from datasets import load_dataset

        return load_dataset(source, config, split=split)
    except (OSError, ValueError, KeyError) as e:
        raise RetainError(f"Could not load the {what} {source!r} ({e}): a hub id needs network access "
                          "or a cached copy; a folder must be a `save_to_disk` dataset.") from e


def load_hf_dataset(spec: str, max_size: int = 224) -> Task:
    """A Task from a hub dataset id or a `save_to_disk` folder: `id[?config=c&image=col&label=col]`."""
    import datasets

    ident, _, query = spec.partition("?")
    opts = {k: v[0] for k, v in parse_qs(query).items()}
    unknown = set(opts) - {"config", "image", "label"}
    if unknown:
        raise RetainError(f"hf:{spec}: unknown option(s) {sorted(unknown)}; use config=, image= and label=.")
    try:
        if Path(ident).is_dir():
            ds = datasets.load_from_disk(ident)
        else:
            ds = datasets.load_dataset(ident, opts.get("config"))
    except Exception as e:
        raise RetainError(
            f"Could not load the dataset {ident!r} ({type(e).__name__}: {e}). A hub id needs network access "
            "or a copy in the datasets cache; a local folder must come from Dataset.save_to_disk."
        ) from e
    if isinstance(ds, datasets.Dataset):
        ds = datasets.DatasetDict({"train": ds})
    if "train" not in ds:
        raise RetainError(f"The dataset {ident!r} has no train split (it has {list(ds)}).")
    feats = ds["train"].features
    image_col = opts.get("image") or next((k for k, f in feats.items() if isinstance(f, datasets.Image)), None)
    label_col = opts.get("label") or next((k for k, f in feats.items() if isinstance(f, datasets.ClassLabel)), None)
    if image_col not in feats or label_col not in feats:
        raise RetainError(
            f"The dataset {ident!r} needs an image and a label column; found {list(feats)}. "
            f"Name them: hf:{ident}?image=<column>&label=<column>."
        )
    label_feat = feats[label_col]
    if not isinstance(label_feat, datasets.ClassLabel):
        raise RetainError(f"The label column {label_col!r} of {ident!r} is not a ClassLabel, so it has no class names.")
    first = ds["train"][0][image_col]
    size = min(max(first.size), max_size)

    def convert(split) -> ImageSplit:
        imgs = [_to_array(row[image_col], size, f"{ident}[{split}][{i}]") for i, row in enumerate(ds[split])]
        return ImageSplit(_stack(imgs), np.asarray(ds[split][label_col], dtype=np.int64))

    train = convert("train")
    test_name = next((s for s in ("test", "validation", "valid", "val") if s in ds), None)
    idx = _carve(len(train), (0.9, 0.1, 0.0) if test_name else (0.7, 0.1, 0.2))
    splits = {"train": ImageSplit(train.images[idx["train"]], train.labels[idx["train"]]),
              "val": ImageSplit(train.images[idx["val"]], train.labels[idx["val"]])}
    splits["test"] = convert(test_name) if test_name else ImageSplit(train.images[idx["test"]], train.labels[idx["test"]])
    names = [n.replace("_", " ") for n in label_feat.names]
    return Task(f"hf:{spec}", names, splits, source=f"hf:{spec}")
