"""Instruction tasks for MLLMs: an image (or none), a question, reference answers, a scorer.

An `InstructionTask` is what the MLLM trainer trains and evaluates on. Sources:

- a classification dataset through the EMT prompt (`from_classification`): the question
  lists the classes, the answer is the class name, scored as in EMT;
- the offline instruction benchmark (`OFFLINE_TASKS`), four skills built from the offline
  assets: `vqa-shapes` (easy-VQA's own questions: shapes, colours, yes/no), `animal-id`
  (name the animal, open answer), `textile-inspect` (defect inspection) and `digit-read`
  (read a handwritten digit), each scored by exact match after normalisation;
- LLaVA/MCITlib conversation files (`load_conversations`): a JSON list or JSONL of
  `{"image": path, "conversations": [{"from": "human", "value": "<image>\\n..."},
  {"from": "gpt", "value": "..."}]}`, one file per split, scored as the task says
  (exact, vqa, caption, or judge: an LLM judge).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np

from retain.data.task import Task
from retain.errors import RetainError


@dataclass
class InstructionSplit:
    images: list  # uint8 (H, W, C) arrays or None for text-only turns
    questions: list[str]
    answers: list[str]
    labels: np.ndarray | None = None  # class indices, for tasks made from a classification dataset
    references: list[list[str]] | None = None  # every accepted answer (VQA annotators, captions); default [answer]

    def __post_init__(self):
        n = len(self.questions)
        if len(self.images) != n or len(self.answers) != n or (self.labels is not None and len(self.labels) != n):
            raise RetainError(f"An instruction split needs as many images, questions and answers (got "
                              f"{len(self.images)}, {n}, {len(self.answers)}).")

    def __len__(self) -> int:
        return len(self.questions)

    def take(self, idx) -> "InstructionSplit":
        idx = np.asarray(idx, dtype=np.int64)
        return InstructionSplit([self.images[i] for i in idx], [self.questions[i] for i in idx],
                                [self.answers[i] for i in idx], None if self.labels is None else self.labels[idx],
                                None if self.references is None else [self.references[i] for i in idx])

    def refs(self, i: int) -> list[str]:
        return self.references[i] if self.references is not None else [self.answers[i]]

    def subset(self, limit: int | None, seed: int = 0) -> "InstructionSplit":
        """At most `limit` items, drawn by a seeded permutation (all when limit is None)."""
        if not limit or limit >= len(self):
            return self
        return self.take(np.sort(np.random.default_rng(seed).permutation(len(self))[:limit]))


@dataclass
class InstructionTask:
    name: str
    splits: dict[str, InstructionSplit]
    scorer: str  # emt | exact | vqa | caption
    source: Task | None = field(default=None, repr=False)  # the classification task, for scorer "emt"

    @cached_property
    def fingerprint(self) -> str:
        """sha256 (hex) of the items, to tell whether two runs saw the same data: per split,
        the questions, answers, references and labels, and each image's pixels (in memory)
        or its path, size and modification time (a file read when it is used)."""
        h = hashlib.sha256(self.scorer.encode() + b"\0")
        for name, s in sorted(self.splits.items()):
            labels = None if s.labels is None else np.asarray(s.labels).tolist()
            h.update(json.dumps([name, s.questions, s.answers, s.references, labels]).encode())
            for image in s.images:
                if image is None:
                    h.update(b"\0")
                elif isinstance(image, str):
                    st = os.stat(image)
                    h.update(f"{image}\0{st.st_size}\0{st.st_mtime_ns}\0".encode())
                else:
                    h.update(np.ascontiguousarray(image).data)
        return h.hexdigest()

    def split(self, name: str) -> InstructionSplit:
        if name not in self.splits:
            raise RetainError(f"Instruction task {self.name!r} has no {name!r} split (it has {sorted(self.splits)}).")
        return self.splits[name]


# EMT's question (Zhai et al., 2023): `retain.eval.emt` asks it, `from_classification` trains on it.
EMT_TEMPLATE = "What is the {noun} in the image? Please only answer a single {noun} in [{classes}]."
NUMBER_TASKS = ("digits",)


def emt_prompt(task: Task, template: str = EMT_TEMPLATE) -> str:
    """The EMT question for `task`: its class names listed, `number` for digit tasks."""
    noun = "number" if task.name in NUMBER_TASKS else "object"
    return template.format(noun=noun, classes=", ".join(task.class_names))


def from_classification(task: Task, template: str | None = None) -> InstructionTask:
    """`task` posed as EMT questions whose answers are the class names."""
    prompt = emt_prompt(task, template or EMT_TEMPLATE)
    splits = {}
    for name in ("train", "val", "test"):
        if name not in task.splits:
            continue
        s = task.split(name)
        splits[name] = InstructionSplit(list(s.images), [prompt] * len(s), [task.class_names[y] for y in s.labels],
                                        np.asarray(s.labels))
    if not splits.get("train") or not len(splits["train"]):
        raise RetainError(f"Task {task.name!r} has no training items to fine-tune an MLLM on.")
    return InstructionTask(task.name, splits, "emt", task)


# ---- the offline instruction benchmark ------------------------------------------------
SCORERS = ("emt", "exact", "vqa", "caption", "judge")
VQA_SIZES = {"train": 1200, "val": 200, "test": 500}


def _from_labels(task: Task, question: str, answer_of) -> dict[str, InstructionSplit]:
    out = {}
    for name in ("train", "val", "test"):
        s = task.split(name)
        out[name] = InstructionSplit(list(s.images), [question] * len(s), [answer_of(int(y)) for y in s.labels],
                                     np.asarray(s.labels))
    return out


def _animal_id() -> InstructionTask:
    from retain.data import load_task

    t = load_task("animal-mnist")
    return InstructionTask("animal-id", _from_labels(t, "What animal is in the image? Answer with one word.",
                                                     lambda y: t.class_names[y]), "exact")


def _textile_inspect() -> InstructionTask:
    from retain.data import load_task

    answers = ["nominal", "local defect", "global defect"]
    q = "Inspect this textile sample. Is it nominal, or does it have a local defect or a global defect?"
    return InstructionTask("textile-inspect", _from_labels(load_task("textile"), q, answers.__getitem__), "exact")


def _digit_read() -> InstructionTask:
    from retain.data import load_task

    q = "Which digit is written in the image? Answer with the digit."
    return InstructionTask("digit-read", _from_labels(load_task("digits"), q, str), "exact")


GARMENT_KINDS = {"t-shirt": "top", "trouser": "trousers", "pullover": "top", "dress": "dress", "coat": "top",
                 "sandal": "footwear", "shirt": "top", "sneaker": "footwear", "bag": "bag", "ankle boot": "footwear"}


def _garment_kind() -> InstructionTask:
    """Fashion-MNIST images (which mini-LLaVA learned to name) asked for a new answer: the
    kind of item (top, trousers, dress, footwear or bag), which it was never taught."""
    from retain.data import load_task

    t = load_task("fashion-mnist")
    kinds = [GARMENT_KINDS[c] for c in t.class_names]
    q = "What kind of item is this? Answer with one word for its kind."
    return InstructionTask("garment-kind", _from_labels(t, q, kinds.__getitem__), "exact")


def _vqa_shapes() -> InstructionTask:
    """easy-VQA's own question/answer pairs: a fixed sample of its train and test questions."""
    from retain.data.offline import savez
    from retain.io import atomic_write
    from retain.paths import cache_dir

    path = cache_dir("data") / "vqa-shapes-v1.npz"
    if not path.exists():
        try:
            import easy_vqa
        except ImportError as e:
            raise RetainError("The vqa-shapes task needs easy-VQA: pip install easy-vqa") from e
        from PIL import Image

        rng = np.random.default_rng(0)
        arrays = {}
        for official, splits in ((True, ("train", "val")), (False, ("test",))):
            qs, ans, ids = easy_vqa.get_train_questions() if official else easy_vqa.get_test_questions()
            paths = easy_vqa.get_train_image_paths() if official else easy_vqa.get_test_image_paths()
            order = rng.permutation(len(qs))
            start = 0
            for split in splits:
                pick = np.sort(order[start:start + VQA_SIZES[split]])
                start += VQA_SIZES[split]
                arrays[f"{split}_images"] = np.stack([np.asarray(Image.open(paths[ids[i]]).convert("RGB"), np.uint8)
                                                      for i in pick])
                arrays[f"{split}_questions"] = np.array([qs[i] for i in pick])
                arrays[f"{split}_answers"] = np.array([ans[i] for i in pick])
        atomic_write(path, lambda tmp: savez(tmp, arrays))
    with np.load(path, allow_pickle=False) as z:
        splits = {s: InstructionSplit(list(z[f"{s}_images"]), [q[0].upper() + q[1:] for q in z[f"{s}_questions"].tolist()],
                                      z[f"{s}_answers"].tolist()) for s in VQA_SIZES}
    return InstructionTask("vqa-shapes", splits, "vqa")


OFFLINE_TASKS = {"vqa-shapes": _vqa_shapes, "animal-id": _animal_id, "textile-inspect": _textile_inspect,
                 "digit-read": _digit_read, "garment-kind": _garment_kind}


# ---- LLaVA / MCITlib conversation files -------------------------------------------------
def _read_records(path: Path) -> list[dict]:
    if not path.exists():
        raise RetainError(f"The conversation file {path} does not exist: check the task's path (and the "
                          "environment variable it uses).")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix == ".jsonl":
            return [json.loads(line) for line in text.splitlines() if line.strip()]
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise RetainError(f"{path} is not valid JSON{' lines' if path.suffix == '.jsonl' else ''}: {e}") from e
    if not isinstance(data, list):
        raise RetainError(f"{path} must hold a list of conversations.")
    return data


def load_conversations(path: str | Path, image_root: str | Path | None = None) -> InstructionSplit:
    """One split from a LLaVA-format conversation file; the first human/gpt turn pair of each item.

    Image paths are relative to `image_root` (default: the file's folder); every one is
    checked here, so a missing image is named before any training.
    """
    path = Path(path)
    root = Path(image_root) if image_root else path.parent
    images, questions, answers, refs = [], [], [], []
    for k, rec in enumerate(_read_records(path)):
        where = f"item {k} (id {rec.get('id', '?')}) of {path}" if isinstance(rec, dict) else f"item {k} of {path}"
        turns = rec.get("conversations") if isinstance(rec, dict) else None
        if not isinstance(turns, list) or not turns:
            raise RetainError(f"{where} has no `conversations` list.")
        bad = next((j for j, t in enumerate(turns) if not isinstance(t, dict) or not isinstance(t.get("value"), str)),
                   None)
        if bad is not None:
            raise RetainError(f"{where}: turn {bad} of its conversations is {turns[bad]!r}; every turn must be a "
                              'mapping like {"from": "human", "value": "<text>"}.')
        if "image" in rec and rec["image"] is not None and not isinstance(rec["image"], str):
            raise RetainError(f"{where}: `image` is {rec['image']!r}; it must be one path (relative to image_root), "
                              "and items with several images are not supported.")
        human = next((t for t in turns if t.get("from") in ("human", "user")), None)
        gpt = next((t for t in turns if t.get("from") in ("gpt", "assistant")), None)
        if human is None or gpt is None or not str(gpt.get("value", "")).strip():
            raise RetainError(f"{where} has no {'question' if human is None else 'answer'} turn: every item needs a "
                              "human turn and a non-empty gpt turn.")
        image = None
        if rec.get("image"):
            image = root / rec["image"]
            if not image.exists():
                raise RetainError(f"{where}: the image {image} does not exist (image_root is {root}).")
            image = str(image)
        images.append(image)
        questions.append(str(human["value"]).replace("<image>", "").strip())
        answers.append(str(gpt["value"]).strip())
        extra = rec.get("answers")
        refs.append([str(a) for a in extra] if isinstance(extra, list) and extra else [answers[-1]])
    if not questions:
        raise RetainError(f"{path} holds no conversations: a task needs at least one item.")
    return InstructionSplit(images, questions, answers, None, refs)


def load_instruction_task(spec, template: str | None = None) -> InstructionTask:
    """An instruction task from a sequence entry.

    Args:
        spec: an offline instruction task (`OFFLINE_TASKS`), a classification task (posed
            as EMT questions), or a mapping `{name, train, test, image_root?, scorer?}` of
            LLaVA-format conversation files; `$VARS` in paths come from the environment.
        template: the EMT prompt for classification tasks.
    """
    from retain.data import list_tasks, load_task

    if isinstance(spec, dict):
        unknown = set(spec) - {"name", "train", "val", "test", "image_root", "scorer"}
        if unknown or "name" not in spec or "test" not in spec:
            raise RetainError(f"A conversation task needs name, train and test (optional: val, image_root, scorer); "
                              f"got {sorted(spec)} for {spec.get('name', '?')!r}.")
        scorer = spec.get("scorer", "exact")
        if scorer not in SCORERS[1:]:
            raise RetainError(f"Task {spec['name']!r}: unknown scorer {scorer!r}; use exact, vqa, caption or judge.")
        root = _expand(spec["image_root"], spec["name"]) if spec.get("image_root") else None
        splits = {s: load_conversations(_expand(spec[s], spec["name"]), root) for s in ("train", "val", "test") if s in spec}
        return InstructionTask(spec["name"], splits, scorer)
    if spec in OFFLINE_TASKS:
        return OFFLINE_TASKS[spec]()
    if spec in list_tasks() or str(spec).startswith(("hf:", "folder:")):
        return from_classification(load_task(spec), template)
    from retain.errors import suggest

    known = [*OFFLINE_TASKS, *list_tasks()]
    raise RetainError(f"Unknown instruction task {spec!r}.{suggest(str(spec), known)} Available: {', '.join(known)}, "
                      "or a mapping of conversation files {name, train, test, image_root, scorer}.")


def task_name(spec) -> str:
    return spec["name"] if isinstance(spec, dict) else str(spec)


def check_conversation_files(sequence: list) -> None:
    """Before any model is loaded: every conversation file and image folder a sequence names
    exists (and every `$VAR` in their paths is set), so a missing download is named at once."""
    for spec in sequence:
        if not isinstance(spec, dict) or "name" not in spec:
            continue
        for key in ("train", "val", "test", "image_root"):
            if key in spec:
                path = Path(_expand(spec[key], spec["name"]))
                if not (path.is_dir() if key == "image_root" else path.is_file()):
                    raise RetainError(f"Task {spec['name']!r}: its {key} {'folder' if key == 'image_root' else 'file'} "
                                      f"{path} does not exist. Download the benchmark there or fix the path in the config.")


def _expand(path: str, task: str) -> str:
    expanded = os.path.expandvars(str(path))
    if "$" in expanded:
        var = expanded[expanded.index("$"):].split("/")[0]
        raise RetainError(f"Task {task!r}: the path {path!r} uses {var}, which is not set: export it (the folder "
                          "holding the benchmark's downloads) or write the path into the config.")
    return expanded
