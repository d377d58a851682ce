"""Does a failure type hold, and does it reach the systems built on the encoder?

- Success (the paper's measure): the fraction of a type's generated pairs that the target
  encoder conflates, cos_target > threshold. We also count the stricter erroneous
  agreements (the reference encoder separates the pair by more than `gap`).
- Transfer: for pairs whose two sentences each describe images that retain has (one
  object of an offline dataset: "a red circle" vs "a red triangle"; see
  `lexical.ground`), show each side's images to a downstream system and ask it to pick
  the caption: the zero-shot classifier built on the target encoder (image-text cosine),
  and an MLLM (log-likelihood of each caption, per token). As in the paper's user study, a
  pair is a downstream failure when either side's images are matched to the wrong caption
  (a side counts as matched when most of its images are).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

from retain.errors import RetainError

CAPTION_QUESTION = "Which caption describes the image? Answer with the caption."


def encoder_scores(target, reference, pairs: list[tuple[str, str]], threshold: float, gap: float) -> list[dict]:
    """Per pair: both cosines, whether the target conflates it, whether it is an erroneous agreement."""
    if not pairs:
        return []
    flat = [s for pair in pairs for s in pair]
    t = target.encode(flat, desc="embedding generated pairs (target)").view(len(pairs), 2, -1)
    r = reference.encode(flat, desc="embedding generated pairs (reference)").view(len(pairs), 2, -1)
    ct = (t[:, 0] * t[:, 1]).sum(-1).tolist()
    cr = (r[:, 0] * r[:, 1]).sum(-1).tolist()
    return [{"cos_target": round(a, 6), "cos_reference": round(b, 6), "conflated": a > threshold,
             "erroneous": a > threshold and abs(a - b) > gap} for a, b in zip(ct, cr)]


class ImageBank:
    """Test-split images of the offline datasets, looked up by a `lexical.Grounding`."""

    DATASETS = {"easyvqa": ("easyvqa-shape", "easyvqa-color"), "fashion-mnist": ("fashion-mnist",),
                "animal-mnist": ("animal-mnist",), "digits": ("digits",)}

    def __init__(self, seed: int = 0):
        self.seed = seed
        self._data: dict[str, tuple[np.ndarray, dict[str, np.ndarray]]] = {}
        self.unavailable: dict[str, str] = {}
        """datasets that could not be loaded (e.g. Fashion-MNIST not installed) and why"""

    def _load(self, dataset: str):
        if dataset not in self._data:
            from retain.data import load_task

            if dataset not in self.DATASETS:
                raise RetainError(f"No images for {dataset!r}: known {sorted(self.DATASETS)}.")
            tasks = [load_task(t) for t in self.DATASETS[dataset]]
            splits = [t.split("test") for t in tasks]
            if any(s.images.shape != splits[0].images.shape for s in splits):
                raise RetainError(f"The test splits of {self.DATASETS[dataset]} hold different images.")
            attrs = {}
            for task, split in zip(tasks, splits):
                key = {"easyvqa-shape": "shape", "easyvqa-color": "color"}.get(task.name, "class")
                attrs[key] = np.asarray(task.class_names, dtype=object)[split.labels]
            self._data[dataset] = (splits[0].images, attrs)
        return self._data[dataset]

    def images(self, grounding, n: int) -> np.ndarray:
        """Up to n images matching every attribute of `grounding`, a fixed sample (none when
        the dataset is unavailable: the reason is kept in `unavailable`)."""
        if grounding.dataset in self.unavailable:
            return np.zeros((0, 1, 1, 1), np.uint8)
        try:
            images, attrs = self._load(grounding.dataset)
        except RetainError as e:
            self.unavailable[grounding.dataset] = str(e)
            return np.zeros((0, 1, 1, 1), np.uint8)
        match = np.ones(len(images), dtype=bool)
        for key, value in grounding.attributes:
            match &= attrs[key] == value
        idx = np.flatnonzero(match)
        if len(idx) > n:
            rng = np.random.default_rng([self.seed, len(idx)])
            idx = np.sort(rng.choice(idx, n, replace=False))
        return images[idx]


def probe_captions() -> list[str]:
    """Every simple caption of one object retain has images of ("a photo of a red circle",
    "a dog", "the number 7"): the seeds of the offline backend's transfer pairs."""
    from retain.data.offline import ANIMAL_CLASSES, COLORS, DIGIT_CLASSES, FASHION_CLASSES, SHAPES
    from retain.multimon.lexical import article

    wrappers = ["{}", "a photo of {}", "a drawing of {}", "a picture of {}"]
    things = ([f"{article(c)} {c} {s}" for c in COLORS for s in SHAPES] + [f"{article(s)} {s}" for s in SHAPES]
              + [f"{article(x)} {x}" for x in ANIMAL_CLASSES + FASHION_CLASSES])
    out = [w.format(t) + "." for w in wrappers for t in things]
    return out + [f"the number {d}." for d in DIGIT_CLASSES] + [f"a handwritten digit {d}." for d in DIGIT_CLASSES]


def grounding_pair(a: str, b: str) -> tuple | None:
    """The two sentences' groundings when both show offline images and different ones, else None."""
    from retain.multimon.lexical import ground

    ga, gb = ground(a), ground(b)
    return (ga, gb) if ga is not None and gb is not None and ga != gb else None


def grounds_apart(a: str, b: str) -> bool:
    """Both sentences show offline images, and different ones."""
    return grounding_pair(a, b) is not None


def groundable(pairs: list[tuple[str, str]]) -> list[tuple | None]:
    """Per pair, the two groundings when both sides have images and they differ, else None."""
    return [grounding_pair(a, b) for a, b in pairs]


def _side_matched(correct: np.ndarray) -> bool:
    return bool(correct.mean() > 0.5)


def _transfer(pairs, groundings, bank: ImageBank, images_per_side: int, pick) -> list[dict | None]:
    """Per pair (None where it has no images): each side's images shown to `pick(a, b, images)`,
    which returns the caption index (0 or 1) chosen for each image."""
    out = []
    for (a, b), g in zip(pairs, groundings):
        sides = [] if g is not None else None
        for k, grounding in enumerate(g or ()):
            imgs = bank.images(grounding, images_per_side)
            if not len(imgs):
                sides = None
                break
            sides.append(pick(a, b, imgs) == k)
        out.append(None if sides is None else _transfer_record(sides))
    return out


@torch.inference_mode()
def zero_shot_transfer(model, pairs, groundings, bank: ImageBank, images_per_side: int = 8) -> list[dict | None]:
    """Per pair (None where it has no images): per side accuracy and whether the pair fails downstream."""
    @lru_cache(maxsize=1)  # both sides of a pair share the captions' embeddings
    def captions(a, b):
        return model.encode_text([a, b]).float().cpu()  # (2, E)

    def pick(a, b, imgs):
        return (model.encode_image(model.preprocess(imgs)).float().cpu() @ captions(a, b).T).argmax(1).numpy()

    return _transfer(pairs, groundings, bank, images_per_side, pick)


def mllm_transfer(mllm, pairs, groundings, bank: ImageBank, images_per_side: int = 8) -> list[dict | None]:
    """As `zero_shot_transfer`, the MLLM picking the caption by per-token log-likelihood."""
    @lru_cache(maxsize=1)
    def lengths(a, b):
        return np.array([len(ids) for ids in mllm.option_ids([a, b])], dtype=np.float64)

    def pick(a, b, imgs):
        return (np.asarray(mllm.loglik_many(list(imgs), CAPTION_QUESTION, [a, b])) / lengths(a, b)).argmax(1)

    return _transfer(pairs, groundings, bank, images_per_side, pick)


def _transfer_record(sides: list[np.ndarray]) -> dict:
    return {"accuracy_a": round(float(sides[0].mean()), 4), "accuracy_b": round(float(sides[1].mean()), 4),
            "images": [int(len(s)) for s in sides], "fails": not (_side_matched(sides[0]) and _side_matched(sides[1]))}


def rate(values: list) -> float | None:
    """The fraction of True among the values that are not None (None when there are none)."""
    vals = [bool(v) for v in values if v is not None]
    return round(float(np.mean(vals)), 4) if vals else None
