"""EMT end to end on a tiny LLaVA: the evaluator's bookkeeping and `retain eval`."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from retain.data.task import ImageSplit, Task
from retain.errors import RetainError
from retain.eval.emt import emt_prompt, evaluate_emt

ROOT = Path(__file__).resolve().parents[2]


class ScriptedMLLM:
    """Answers from a list, to check the evaluator's counting against a hand-made table."""

    def __init__(self, answers, scores=None):
        self.answers, self.scores = list(answers), scores

    def generate(self, images, questions, max_new_tokens=16, batch_size=8):
        out, self.answers = self.answers[:len(questions)], self.answers[len(questions):]
        return out

    def loglik_many(self, images, question, options, batch_size=8):
        return [self.scores.pop(0) for _ in images]


def toy_task():
    split = ImageSplit(np.zeros((5, 4, 4, 1), np.uint8), np.array([0, 1, 2, 0, 1]))
    return Task("toy", ["cat", "dog", "bird"], {"train": split, "val": split, "test": split})


def test_counts_and_accuracy_by_hand():
    task = toy_task()
    mllm = ScriptedMLLM(["A cat.", "cat", "a bird or a dog", "tiger", "dogs"])
    res = evaluate_emt(mllm, task, "rule", batch_size=2)
    # correct: items 0 and 4; wrong: item 1; several: item 2; outside: item 3
    assert res.accuracy == pytest.approx(2 / 5)
    assert res.counts == {"correct": 2, "wrong_class": 1, "several_classes": 1, "outside_label_set": 1, "judge_error": 0}
    assert res.examples["outside_label_set"] == [{"answer": "tiger", "label": "cat"}]


def test_likelihood_mode_takes_the_best_option():
    task = toy_task()
    scores = [[-1, -2, -3], [-1, -0.5, -9], [-5, -4, -3], [-1, -2, -3], [0, -1, -2]]
    res = evaluate_emt(ScriptedMLLM([], scores), task, "likelihood")
    assert [r["predicted"] for r in res.records] == [0, 1, 2, 0, 0]
    assert res.accuracy == pytest.approx(4 / 5)


def test_prompt_and_bad_mode():
    assert emt_prompt(toy_task()) == ("What is the object in the image? Please only answer a single object in "
                                      "[cat, dog, bird].")
    digits = Task("digits", [str(i) for i in range(10)], {})
    assert "single number in [0, 1," in emt_prompt(digits)
    with pytest.raises(RetainError, match="Unknown EMT scoring mode"):
        evaluate_emt(None, toy_task(), "vibes")
    with pytest.raises(RetainError, match="needs a judge"):
        evaluate_emt(None, toy_task(), "judge")


@pytest.mark.parametrize("mode", ["rule", "likelihood"])
def test_retain_eval_end_to_end(tmp_path, tiny_llava_dir, tiny_clip_dir, mode):
    out = tmp_path / "eval"
    proc = subprocess.run([sys.executable, "-m", "retain", "--quiet", "eval", "--model", str(tiny_llava_dir),
                           "--tasks", "digits,textile", "--mode", mode, "--limit", "6", "--encoder", str(tiny_clip_dir),
                           "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "RETAIN_QUIET": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads((out / "results.json").read_text())
    assert [t["task"] for t in res["tasks"]] == ["digits", "textile"]
    for t in res["tasks"]:
        assert sum(t["counts"].values()) == 6 and 0 <= t["mllm_accuracy"] <= 1
        assert t["gap"] == pytest.approx(t["mllm_accuracy"] - t["encoder_zero_shot"])
    assert len((out / "records" / "digits.jsonl").read_text().splitlines()) == 6
    assert "| digits |" in proc.stdout
    # report.html: every wrong answer (at most 8 per dataset) shown with the very image it was given for
    import base64

    from retain.data import load_task
    from retain.report.page import image_png

    html = (out / "report.html").read_text()
    failures = html[html.index("<section id='emt-failures'>"):html.index("<section id='config'>")]
    for t in res["tasks"]:
        recs = [json.loads(x) for x in (out / "records" / f"{t['task']}.jsonl").read_text().splitlines()]
        wrong = [r for r in recs if r["outcome"] != "correct"]
        images = load_task(t["task"]).split("test").subset(6).images
        for r in wrong:
            assert base64.b64encode(image_png(images[r["index"]])).decode() in failures
    assert failures.count("class='example'") == sum(min(6 - t["counts"]["correct"], 8) for t in res["tasks"])


def test_mini_llava_gets_the_mini_clip_column_by_default(tmp_path, tiny_llava_dir, tiny_clip_dir, monkeypatch):
    from retain.cli import main
    from retain import registry

    seen = []
    real_mllm, real_encoder = registry.load_mllm, registry.load_dual_encoder
    monkeypatch.setattr(registry, "load_mllm", lambda name, **kw: seen.append(name) or real_mllm(str(tiny_llava_dir)))
    monkeypatch.setattr(registry, "load_dual_encoder",
                        lambda name, **kw: seen.append(name) or real_encoder(str(tiny_clip_dir)))
    out = tmp_path / "eval"
    assert main(["--quiet", "eval", "--model", "mini-llava", "--tasks", "digits", "--limit", "4",
                 "--mode", "likelihood", "--out", str(out)]) == 0
    assert seen == ["mini-llava", "mini-clip"]
    res = json.loads((out / "results.json").read_text())
    assert res["encoder"] == "mini-clip" and res["tasks"][0]["encoder_zero_shot"] is not None


def test_retain_eval_with_a_dead_judge_stops_at_once_with_one_message(tmp_path, tiny_llava_dir):
    from loopback import dead_url

    url, out = dead_url(), tmp_path / "eval"
    proc = subprocess.run([sys.executable, "-m", "retain", "--quiet", "eval", "--model", str(tiny_llava_dir),
                           "--tasks", "digits", "--mode", "judge", "--judge-url", url, "--judge-model", "judge-m",
                           "--limit", "6", "--out", str(out)], cwd=ROOT, capture_output=True, text=True,
                          timeout=60, env={**os.environ, "RETAIN_QUIET": "1"})
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert f"Nothing answers at the chat endpoint {url} (model 'judge-m')" in proc.stderr
    assert "Traceback" not in proc.stderr and proc.stderr.count("retain: error:") == 1
    assert not out.exists()  # nothing measured, nothing written


def test_retain_eval_stops_when_the_judge_goes_down_and_writes_no_zero(server, tmp_path, tiny_llava_dir, capsys):
    from retain.cli import main

    server.script = [("status", 500, {"retry-after-ms": "1"})] * 100  # answers the probe, fails every request
    out = tmp_path / "eval"
    code = main(["--quiet", "eval", "--model", str(tiny_llava_dir), "--tasks", "digits,textile", "--mode", "judge",
                 "--judge-url", server.url, "--judge-model", "judge-m", "--limit", "8", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and f"{server.url} (model 'judge-m') failed 5 requests in a row" in err
    assert len(server.requests) == 5 * 4  # 5 items of 4 attempts each, then the breaker: no more requests
    res = json.loads((out / "results.json").read_text())
    assert [t["task"] for t in res["tasks"]] == ["digits"] and "failed 5 requests" in res["halted"]
    digits = res["tasks"][0]
    assert digits["mllm_accuracy"] is None and digits["gap"] is None and digits["unscored"] == 8
    records = [json.loads(x) for x in (out / "records" / "digits.jsonl").read_text().splitlines()]
    assert [r["outcome"] for r in records] == ["judge_error"] * 8
    assert all("not judged" in r["judge_error"] for r in records[5:])
    assert "| digits | - |" in (out / "emt.md").read_text() and "8 item(s) unscored" in (out / "emt.md").read_text()
