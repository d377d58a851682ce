"""Image-classification evaluators for dual encoders: zero-shot and linear probe.

The linear probe follows the LDIFS protocol (Mukhoti et al., 2023): logistic regression
on frozen, L2-normalised image features, its inverse regularisation strength chosen on
the validation split, accuracy reported on the test split.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from retain.data.task import ImageSplit, Task
from retain.models.dual_encoder import DualEncoder

PROBE_C_GRID = (0.1, 1.0, 10.0, 100.0)


@torch.no_grad()
def image_features(model: DualEncoder, split: ImageSplit, batch_size: int = 256, desc: str = "image features") -> torch.Tensor:
    """L2-normalised image embeddings of every item of `split`, (N, E), in order."""
    from retain.progress import bar

    was_training = model.training
    model.eval()
    starts = range(0, len(split), batch_size)
    out = [model.encode_image(model.preprocess(split.images[i:i + batch_size]))
           for i in bar(starts, desc=f"{desc} ({len(split)} images)", leave=False, disable=len(starts) < 4)]
    model.train(was_training)
    return torch.cat(out).float().cpu()


@dataclass
class ClassificationResult:
    accuracy: float
    predictions: np.ndarray
    labels: np.ndarray
    confidence: np.ndarray | None = None
    """probability the classifier gave its prediction (for calibration), per item"""

    def records(self, task: str, evaluator: str) -> list[dict]:
        """Per-item records, so that every score can be audited (and resampled for intervals)."""
        out = [{"task": task, "evaluator": evaluator, "index": i, "label": int(y),
                "prediction": int(p), "correct": bool(p == y)}
               for i, (p, y) in enumerate(zip(self.predictions, self.labels))]
        if self.confidence is not None:
            for rec, c in zip(out, self.confidence):
                rec["confidence"] = round(float(c), 6)
        return out


def accuracy_of(logits: torch.Tensor, labels: np.ndarray, probability: str = "softmax") -> ClassificationResult:
    """Accuracy of argmax predictions; confidence is the predicted class's probability: the softmax of
    the logits as given, or with `probability="sigmoid"` its own sigmoid (SigLIP's zero-shot head)."""
    pred = logits.argmax(-1).cpu().numpy()
    probs = logits.double().sigmoid() if probability == "sigmoid" else torch.softmax(logits.double(), -1)
    conf = probs.max(-1).values.cpu().numpy()
    return ClassificationResult(float((pred == labels).mean()), pred, labels, conf)


def zero_shot(model: DualEncoder, task: Task, split: str = "test", limit: int | None = None,
              head: torch.Tensor | None = None, scale: float | None = None,
              pretrained_head: bool = False) -> ClassificationResult:
    """Zero-shot accuracy: nearest class embedding, templates averaged.

    Args:
        head: (C, E) class embeddings to use instead of this model's own text tower
            (concept forgetting uses the pre-trained text encoder's head).
        scale: temperature of the softmax whose maximum is each item's confidence
            (logits = scale * cosine); default the model's own logit scale for its own
            head, 1 for a given head (a task head already holds its scale).
        pretrained_head: `head` is the model's own zero-shot head times its scale, kept from
            before training (the probes'): scored as the model's own head is, with its logit
            bias and its probabilities (a sigmoid per class for SigLIP), not as a task head.
    Confidences of the model's own head are its `class_probabilities`: CLIP's softmax, SigLIP's
    sigmoid; a task head (trained with cross-entropy over its classes) gives a softmax.
    """
    data = task.split(split).subset(limit)
    own = head is None or pretrained_head
    if head is None:
        head = model.zero_shot_head(task.class_names, task.templates)
        scale = float(model.logit_scale.detach().exp()) if scale is None else scale
    feats = image_features(model, data, desc=f"zero-shot {task.name}")
    logits = feats @ head.float().cpu().T * (1.0 if scale is None else scale)
    if own and model.head_kind == "sigmoid":
        return accuracy_of(logits + float(model.logit_bias.detach()), data.labels, probability="sigmoid")
    return accuracy_of(logits, data.labels)


def linear_probe(model: DualEncoder, task: Task, limit: int | None = None,
                 c_grid: tuple[float, ...] = PROBE_C_GRID, seed: int = 0) -> ClassificationResult:
    """Linear-probe accuracy on the test split, C chosen by validation accuracy."""
    from sklearn.linear_model import LogisticRegression

    splits = {s: task.split(s).subset(limit) for s in ("train", "val", "test")}
    feats = {s: image_features(model, d, desc=f"linear probe {task.name} {s}").numpy() for s, d in splits.items()}
    best_c, best_acc = c_grid[0], -1.0
    for c in c_grid:
        clf = LogisticRegression(C=c, max_iter=1000, random_state=seed)
        clf.fit(feats["train"], splits["train"].labels)
        acc = float((clf.predict(feats["val"]) == splits["val"].labels).mean())
        if acc > best_acc:
            best_c, best_acc = c, acc
    clf = LogisticRegression(C=best_c, max_iter=1000, random_state=seed)
    clf.fit(np.concatenate([feats["train"], feats["val"]]),
            np.concatenate([splits["train"].labels, splits["val"].labels]))
    proba = clf.predict_proba(feats["test"])
    pred = clf.classes_[proba.argmax(1)]
    labels = splits["test"].labels
    return ClassificationResult(float((pred == labels).mean()), pred, labels, proba.max(1))
