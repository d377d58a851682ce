"""What the built mini-LLaVA can do, and what it cost: image questions vs chance, text-only answers.

Image questions (easy-VQA test images): "What shape is in the image?" and "What color is the
shape?", scored by likelihood ranking of the answer options (chance: 1/3 and 1/8), and EMT
on Fashion-MNIST with the rule matcher. Text-only: answers to held-out text questions with
known answers (a hit when the expected word appears). Build time comes from the build's
DONE file. Results go to bench/results/mini_llava.json.

    .venv/bin/python bench/mini_llava.py
    .venv/bin/python bench/mini_llava.py --build   # also time a fresh build, with its peak memory

`--build` runs `retain zoo build mini-llava` in its own process on a throwaway cache that
links the cached mini-CLIP, SmolLM2 and datasets, so only mini-LLaVA itself is built.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from retain.data import load_task
from retain.eval.emt import evaluate_emt
from retain.registry import load_mllm, zoo_folder
from timed import timed_retain

OUT = Path(__file__).parent / "results"
N = 200
TEXT = [("What is 3 plus 4?", "7"), ("What is the capital of Italy?", "rome"), ("How many days are in a week?", "7"),
        ("What color is the sky on a clear day?", "blue"), ("What is the freezing point of water in Celsius?", "0"),
        ("Which planet do we live on?", "earth"), ("What is 9 minus 5?", "4"), ("How many wheels does a bicycle have?", "2")]


def fresh_build() -> dict:
    """Wall time and peak memory of building mini-LLaVA when its parts are already cached."""
    cache = zoo_folder("mini-llava", build=False).parents[1]
    tmp = Path(tempfile.mkdtemp(prefix="retain-build-"))
    try:
        (tmp / "zoo").mkdir()
        (tmp / "data").symlink_to(cache / "data")
        for part in ("mini-clip", "smollm2"):
            for d in (cache / "zoo").glob(f"{part}*"):
                (tmp / "zoo" / d.name).symlink_to(d)
        rc, cost, proc = timed_retain(["--quiet", "zoo", "build", "mini-llava"], {"RETAIN_CACHE": str(tmp)})
        if rc != 0:
            raise SystemExit(f"the build failed:\n{proc.stderr[-3000:]}")
        return {**cost, "command": "retain zoo build mini-llava", "cached_parts": "mini-CLIP, SmolLM2, datasets"}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    old = json.loads((OUT / "mini_llava.json").read_text()) if (OUT / "mini_llava.json").exists() else {}
    fresh = fresh_build() if "--build" in sys.argv else old.get("fresh_build")
    path = zoo_folder("mini-llava")
    mllm = load_mllm(str(path))
    shape, color = load_task("easyvqa-shape"), load_task("easyvqa-color")
    s_test, c_test = shape.split("test").subset(N), color.split("test").subset(N)
    res = {"model_dir": str(path), "build": (path / "DONE").read_text().strip(), "items": N}
    if fresh:
        res["fresh_build"] = fresh
    t = time.time()
    for name, task, split, q in (("shape", shape, s_test, "What shape is in the image?"),
                                 ("color", color, c_test, "What color is the shape?")):
        preds = [int(np.argmax(mllm.loglik(split.images[i], q, task.class_names))) for i in range(len(split))]
        res[f"easyvqa_{name}_accuracy"] = float(np.mean(np.array(preds) == split.labels))
        res[f"easyvqa_{name}_chance"] = 1 / task.num_classes
    res["likelihood_images_per_s"] = 2 * N / (time.time() - t)
    emt = evaluate_emt(mllm, load_task("fashion-mnist"), "rule", limit=N)
    res["emt_fashion_rule"] = emt.summary()
    answers = mllm.generate(None, [q for q, _ in TEXT], max_new_tokens=24)
    res["text_only"] = [{"question": q, "expected": a, "answer": ans, "hit": a in ans.lower()}
                        for (q, a), ans in zip(TEXT, answers)]
    res["text_only_hits"] = sum(r["hit"] for r in res["text_only"])
    OUT.mkdir(exist_ok=True)
    (OUT / "mini_llava.json").write_text(json.dumps(res, indent=2) + "\n")
    print(json.dumps({k: v for k, v in res.items() if k not in ("emt_fashion_rule",)}, indent=2))
    print("EMT fashion (rule):", json.dumps(emt.summary()["counts"]), f"accuracy {emt.accuracy:.3f}")


if __name__ == "__main__":
    main()
