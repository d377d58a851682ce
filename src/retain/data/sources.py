"""User data sources: Hugging Face `datasets` and image folders.

`hf:<id>` loads a hub dataset (`datasets.load_dataset`) or a folder written by
`Dataset.save_to_disk`; the image column is the one with an `Image` feature and the
label column the one with a `ClassLabel` feature (or name them: `hf:<id>?image=img&label=y`).
`folder:<root>` reads `root/<split>/<class>/*` (splits `train`, `val`, `test`; `train`
required) or `root/<class>/*` (then split 70/10/20 with a fixed seed). Symbolic links to
class folders or images are followed; hidden files and folders (names starting with `.`,
such as `.ipynb_checkpoints` or macOS `._x.png`) are not read. Every bad item is an error
that names it: a dangling link, an image outside a class folder, an empty class folder, a
class left without training images, an unreadable image. A test or val split may lack a
class's folder (a warning names it); a split may not hold an empty one.

Pixels (`_to_array`): 8-bit images are read as they are; 16-bit ones are scaled by their
full range (v -> round(v / 65535 * 255)), never clipped; images with transparency are
composited over a background, white unless the spec names another
(`folder:<root>?background=black`, `hf:<id>?background=#808080`; any Pillow colour).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from urllib.parse import parse_qs

import numpy as np

from retain.data.task import ImageSplit, Task
from retain.errors import RetainError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
SPLIT_SEED = 0
SPLITS = ("train", "val", "test")
DEFAULT_BACKGROUND = "white"
ALPHA_MODES = {"RGBA", "LA", "PA", "RGBa", "La"}
GRAY_MODES = {"1", "L", "LA", "La"}


def _options(spec: str, query: str, allowed: dict[str, str]) -> dict[str, str]:
    """`k=v&...` of a source spec; an option outside `allowed` (name -> what it does) is refused by name."""
    opts = {k: v[-1] for k, v in parse_qs(query, keep_blank_values=True).items()}
    unknown = sorted(set(opts) - set(allowed))
    if unknown:
        known = "; ".join(f"{k}= {what}" for k, what in allowed.items())
        raise RetainError(f"{spec}: unknown option(s) {unknown}. Known options: {known}.")
    return opts


def _background(value: str | None, spec: str) -> tuple[int, int, int]:
    from PIL import ImageColor

    try:
        return tuple(ImageColor.getrgb(value or DEFAULT_BACKGROUND)[:3])
    except ValueError as e:
        raise RetainError(f"{spec}: background={value!r} is not a colour; give a name (white, black, gray) "
                          "or a hex value (#808080).") from e


def _high_depth_gray(image, where: str) -> np.ndarray:
    """A 16-bit, 32-bit integer or float grayscale image -> float32 values in [0, 255].

    `I;16*` (16-bit PNG and TIFF) and `I` (32-bit integer; how Pillow gives 16-bit data
    converted or read by older versions) are read as 16-bit values: v -> v / 65535 * 255;
    an `I` value outside 0..65535 is refused. `F` (float) images must hold values in
    [0, 1], scaled by 255; anything else (NaN, a physical unit, 0..255 floats) is refused,
    since no rule can tell its range from one image.
    """
    if "transparency" in image.info:
        raise RetainError(f"The image {where} is a 16-bit or float image with a transparent colour, which retain "
                          "does not composite: save it as 8-bit RGBA (or drop its transparency).")
    arr = np.asarray(image)
    if image.mode == "F":
        lo, hi = float(np.min(arr)), float(np.max(arr))
        if not (0.0 <= lo and hi <= 1.0):  # also catches NaN
            raise RetainError(f"The float image {where} holds values from {lo} to {hi}; float images are read "
                              "as 0..1. Rescale it to 0..1, or save it as 8 or 16 bits.")
        return arr.astype(np.float32) * 255.0
    arr = arr.astype(np.float64)
    lo, hi = float(arr.min()), float(arr.max())
    if lo < 0 or hi > 65535:
        raise RetainError(f"The 32-bit image {where} holds values from {lo:.0f} to {hi:.0f}; integer images are "
                          "read as 16 bits (0..65535). Rescale it to 16 or 8 bits and save it again.")
    return (arr / 65535.0 * 255.0).astype(np.float32)


def _to_array(image, size: int, where: str, background: tuple[int, int, int] = (255, 255, 255)) -> np.ndarray:
    """A PIL image -> uint8 (size, size, 1 or 3), resized bilinearly.

    8-bit images are read as they are; higher bit depths are scaled by their type's range
    (`_high_depth_gray`; Pillow itself decodes 16-bit RGB(A) PNGs to 8 bits by their high
    byte). Transparency (an alpha channel, a palette's or a colour key's) is composited
    over `background` before resizing: pixel * a + background * (1 - a), a = alpha / 255.
    A grayscale image stays one channel unless the background has a colour.
    """
    from PIL import Image

    try:
        image.load()  # decoding happens lazily in PIL
        if image.mode.startswith("I") or image.mode == "F":
            gray = Image.fromarray(_high_depth_gray(image, where), "F").resize((size, size), Image.BILINEAR)
            arr = np.rint(np.clip(np.asarray(gray), 0, 255)).astype(np.uint8)
        elif image.mode in ALPHA_MODES or "transparency" in image.info:
            rgba = np.asarray(image.convert("RGBA"), dtype=np.float64)
            alpha = rgba[..., 3:] / 255.0
            arr = np.rint(rgba[..., :3] * alpha + np.asarray(background, np.float64) * (1.0 - alpha)).astype(np.uint8)
            if image.mode in GRAY_MODES and len(set(background)) == 1:
                arr = arr[..., 0]
            arr = np.asarray(Image.fromarray(arr).resize((size, size), Image.BILINEAR))
        else:
            mode = "L" if image.mode in GRAY_MODES else "RGB"
            arr = np.asarray(image.convert(mode).resize((size, size), Image.BILINEAR), dtype=np.uint8)
    except RetainError:
        raise
    except Exception as e:
        raise RetainError(f"The image {where} cannot be read ({e}): remove or replace it.") from e
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
def _visible(folder: Path) -> list[Path]:
    """The entries of `folder` not hidden, sorted; a dangling symbolic link is an error."""
    out = []
    for p in sorted(folder.iterdir()):
        if p.name.startswith("."):
            continue
        if p.is_symlink() and not p.exists():
            raise RetainError(f"{p} is a symbolic link to {os.readlink(p)}, which does not exist: "
                              "fix the link or remove it.")
        out.append(p)
    return out


def _class_folders(folder: Path, split: str) -> dict[str, Path]:
    """Class name -> folder for one split folder; an image lying beside the class folders is an error."""
    out = {}
    for p in _visible(folder):
        if p.is_dir():
            out[p.name] = p
        elif p.suffix.lower() in IMAGE_SUFFIXES:
            raise RetainError(f"The image {p} lies directly in the {split} folder {folder}, outside any class "
                              f"folder: move it into {folder}/<class>/ or remove it.")
    return out


def _class_images(folder: Path, cls: str, split: str, root: Path) -> list[Path]:
    """The images of one class folder; an empty one is an error that says what it holds instead."""
    entries = _visible(folder)
    images = [p for p in entries if p.suffix.lower() in IMAGE_SUFFIXES]
    if not images:
        subfolders = [p.name for p in entries if p.is_dir()]
        held = (f"it holds {len(entries) - len(subfolders)} other file(s) and the subfolder(s) {subfolders}, "
                f"but images must lie directly in it with a suffix among {sorted(IMAGE_SUFFIXES)}" if entries
                else "it is empty")
        which = f"class {cls!r}, {split} split of {root}" if split in SPLITS else f"class {cls!r} of {root}"
        raise RetainError(f"The class folder {folder} ({which}) has no images "
                          f"({held}): add images to it or remove the folder.")
    return images


def load_image_folder(spec: str, size: int | None = None, max_size: int = 224) -> Task:
    """A Task from `root[?background=<colour>]` laid out as `root/<split>/<class>/*` or `root/<class>/*`.

    Class names are the training class folders' names (`_` read as a space). Transparent
    pixels are composited over `background` (default white). See the module docstring for
    what is refused.
    """
    from PIL import Image

    root, _, query = (spec, "", "") if Path(spec).expanduser().is_dir() else spec.partition("?")
    opts = _options(f"folder:{spec}", query, {"background": "the colour under transparent pixels (default white)"})
    background = _background(opts.get("background"), f"folder:{spec}")
    base = Path(root).expanduser()
    if not base.is_dir():
        raise RetainError(f"The image folder {base} does not exist: check the path after folder:.")
    split_dirs = {s: base / s for s in SPLITS if (base / s).is_dir()}
    if split_dirs:
        if "train" not in split_dirs:
            raise RetainError(f"The image folder {base} has split folders {sorted(split_dirs)} but no train/ folder: "
                              f"add {base}/train/<class>/ folders of images.")
        others = [p.name for p in _visible(base) if p.is_dir() and p.name not in SPLITS]
        if others:
            raise RetainError(f"The image folder {base} has split folders {sorted(split_dirs)} and also {others}, "
                              "which retain would not read: move them into train/, val/ or test/ (validation data "
                              "goes in val/), or out of the folder.")
    layout = split_dirs or {"all": base}
    class_root = layout.get("train", base)
    train_folders = _class_folders(class_root, "train" if split_dirs else "image")
    classes = sorted(train_folders)
    if not classes:
        raise RetainError(f"The image folder {class_root} has no class folders (expected {class_root}/<class>/<image>).")
    files: dict[str, list[tuple[Path, int]]] = {}
    for split, d in layout.items():
        folders = train_folders if d == class_root else _class_folders(d, split)
        for name, folder in folders.items():
            if name not in classes:
                raise RetainError(
                    f"The folder {folder} names class {name!r}, which is not among the training "
                    f"classes {classes}: rename it or add {class_root / name}."
                )
        missing = [c for c in classes if c not in folders]
        if missing and len(missing) < len(classes):
            warnings.warn(f"The {split} split of {base} has no folder for the class(es) {missing}: its {split} "
                          f"scores cover the other {len(classes) - len(missing)} classes only. Add {d}/<class>/ "
                          "folders if that is not intended.", stacklevel=2)
        items = [(f, classes.index(name)) for name, folder in sorted(folders.items())
                 for f in _class_images(folder, name, split, base)]
        if not items:
            raise RetainError(f"The {split} split of {base} ({d}) has no images: add {d}/<class>/ folders "
                              "of images, or remove it.")
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
                    imgs.append(_to_array(im, size, str(path), background))
            except RetainError:
                raise
            except Exception as e:
                raise RetainError(f"The image {path} cannot be read ({e}): remove or replace it.") from e
        arrays[split] = _stack(imgs)
        labels[split] = np.array([lab for _, lab in items], dtype=np.int64)
    if "all" in arrays:
        fractions = (0.7, 0.1, 0.2)
        idx = _carve(len(labels["all"]), fractions)
        splits = {s: ImageSplit(arrays["all"][i], labels["all"][i]) for s, i in idx.items()}
    else:
        splits = {s: ImageSplit(arrays[s], labels[s]) for s in arrays}
        fractions = (0.9, 0.1, 0.0)
        if "val" not in splits:
            idx = _carve(len(splits["train"]), fractions)
            tr = splits["train"]
            splits["train"], splits["val"] = (ImageSplit(tr.images[idx["train"]], tr.labels[idx["train"]]),
                                              ImageSplit(tr.images[idx["val"]], tr.labels[idx["val"]]))
    _check_every_class_trains(splits["train"], classes, files, base, fractions)
    names = [c.replace("_", " ") for c in classes]
    name = f"folder:{base}" + (f"?{query}" if query else "")
    return Task(name, names, splits, source=name)


def _check_every_class_trains(train: ImageSplit, classes: list[str], files, base: Path, fractions) -> None:
    """A class whose few images the fixed split sent to val/test only is an error, not a class never trained."""
    counts = np.bincount(train.labels, minlength=len(classes))
    if counts.all():
        return
    carved = "train/" if "train" in files else str(base)
    have = np.bincount([lab for _, lab in files["train" if "train" in files else "all"]], minlength=len(classes))
    lacking = ", ".join(f"{classes[i]!r} ({have[i]} image(s) in {carved})" for i in np.flatnonzero(counts == 0))
    split = "/".join(str(round(f * 100)) for f in fractions if f)
    raise RetainError(
        f"The fixed {split} split of {carved} left no training image for the class(es) {lacking}: add images "
        f"to them, or give {base} train/<class>/ and val/<class>/ folders to choose the split yourself."
    )


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
    """A Task from a hub dataset id or a `save_to_disk` folder: `id[?config=c&image=col&label=col&background=c]`."""
    import datasets

    ident, _, query = spec.partition("?")
    opts = _options(f"hf:{spec}", query, {"config": "the dataset's configuration", "image": "the image column",
                                          "label": "the ClassLabel column",
                                          "background": "the colour under transparent pixels (default white)"})
    background = _background(opts.get("background"), f"hf:{spec}")
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
        imgs = [_to_array(row[image_col], size, f"{ident}[{split}][{i}]", background) for i, row in enumerate(ds[split])]
        return ImageSplit(_stack(imgs), np.asarray(ds[split][label_col], dtype=np.int64))

    train = convert("train")
    test_name = next((s for s in ("test", "validation", "valid", "val") if s in ds), None)
    idx = _carve(len(train), (0.9, 0.1, 0.0) if test_name else (0.7, 0.1, 0.2))
    splits = {"train": ImageSplit(train.images[idx["train"]], train.labels[idx["train"]]),
              "val": ImageSplit(train.images[idx["val"]], train.labels[idx["val"]])}
    splits["test"] = convert(test_name) if test_name else ImageSplit(train.images[idx["test"]], train.labels[idx["test"]])
    names = [n.replace("_", " ") for n in label_feat.names]
    return Task(f"hf:{spec}", names, splits, source=f"hf:{spec}")
