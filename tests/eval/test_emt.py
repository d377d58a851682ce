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

    def option_ids(self, options):  # one token per word
        return [o.split() for o in options]


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


def test_likelihood_mode_reports_length_normalised_accuracy_beside_the_summed_one():
    from retain.intervals import item_score

    split = ImageSplit(np.zeros((3, 4, 4, 1), np.uint8), np.array([0, 1, 1]))
    task = Task("toy", ["cat", "grey heron", "golden retriever dog"], {"test": split})  # 1, 2, 3 tokens
    # summed log-probs: the sum picks cat (-2), the mean per token grey heron (-2.6 / 2 = -1.3),
    # the mean per character golden retriever dog (-4.5 / 20 = -0.225 against -2.6 / 10 = -0.26)
    res = evaluate_emt(ScriptedMLLM([], [[-2, -2.6, -4.5]] * 3), task, "likelihood", batch_size=2)
    picks = [(r["predicted"], r["predicted_norm_token"], r["predicted_norm_char"]) for r in res.records]
    assert picks == [(0, 1, 2)] * 3
    assert [r["outcome"] for r in res.records] == ["correct", "wrong_class", "wrong_class"]
    assert [item_score(r) for r in res.records] == [1.0, 0.0, 0.0]  # intervals still read the summed pick
    assert (res.accuracy, res.accuracy_norm_token, res.accuracy_norm_char) == pytest.approx((1 / 3, 2 / 3, 0))
    summary = res.summary()
    assert (summary["mllm_accuracy"], summary["mllm_accuracy_norm_token"],
            summary["mllm_accuracy_norm_char"]) == pytest.approx((1 / 3, 2 / 3, 0))
    rule = evaluate_emt(ScriptedMLLM(["cat"] * 3), task, "rule")
    assert "mllm_accuracy_norm_token" not in rule.summary() and "predicted_norm_token" not in rule.records[0]


def test_judge_mode_reports_the_rule_matchers_agreement_with_the_judge(server, tmp_path):
    from retain.eval.judge import LLMJudge
    from retain.llm import ChatClient

    task = toy_task()  # labels cat, dog, bird, cat, dog
    mllm = ScriptedMLLM(["A cat.", "cat", "a bird or a dog", "tiger", "dogs"])
    # rule says correct: yes, no, no, no, yes; the judge: yes, no, yes, no, unclear twice (unscored)
    server.script = [("ok", "yes"), ("ok", "no"), ("ok", "yes"), ("ok", "no"), ("ok", "maybe"), ("ok", "perhaps")]
    judge = LLMJudge(ChatClient(server.url, "judge-m", api_key_env="RETAIN_TEST_API_KEY", max_retries=1,
                                cache_dir=str(tmp_path / "cache")), unclear_retries=1)
    res = evaluate_emt(mllm, task, "judge", judge=judge)
    assert [r["rule_outcome"] for r in res.records] == ["correct", "wrong_class", "several_classes",
                                                        "outside_label_set", "correct"]
    assert [r["outcome"] for r in res.records] == ["correct", "wrong_class", "correct", "outside_label_set",
                                                   "judge_error"]
    assert res.rule_judge_agreement == pytest.approx(3 / 4)  # both scored items 0-3; they differ on item 2
    assert res.summary()["rule_judge_agreement"] == pytest.approx(3 / 4)
    assert "rule_judge_agreement" not in evaluate_emt(ScriptedMLLM(["cat"] * 5), task, "rule").summary()


def test_user_synonyms_reach_the_rule_matcher():
    task = toy_task()
    answers = ["a moggy", "a moggy", "a birdie", "cat", "dog"]
    plain = evaluate_emt(ScriptedMLLM(answers), task, "rule")
    assert [r["outcome"] for r in plain.records[:3]] == ["outside_label_set"] * 3
    res = evaluate_emt(ScriptedMLLM(answers), task, "rule", synonyms={"cat": ["moggy"], "bird": "birdie",
                                                                      "airplane": ["plane"]})  # another label set's
    assert [r["outcome"] for r in res.records] == ["correct", "wrong_class", "correct", "correct", "correct"]


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
    if mode == "likelihood":  # the length-normalised accuracies beside the summed one, from the records
        for t in res["tasks"]:
            recs = [json.loads(x) for x in (out / "records" / f"{t['task']}.jsonl").read_text().splitlines()]
            for how in ("token", "char"):
                assert t[f"mllm_accuracy_norm_{how}"] == pytest.approx(
                    np.mean([r[f"predicted_norm_{how}"] == r["label"] for r in recs]))
        assert "MLLM accuracy per token" in (out / "report.html").read_text()
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


def test_retain_eval_synonyms_file_reaches_the_matcher_and_a_bad_class_stops_first(tmp_path, tiny_llava_dir,
                                                                                  tiny_clip_dir, monkeypatch):
    from retain import registry
    from retain.cli import main

    good, bad = tmp_path / "good.yaml", tmp_path / "bad.yaml"
    good.write_text("'7': [lucky]\n")
    bad.write_text("pony: [foal]\n")
    loaded = []
    real = registry.load_mllm
    monkeypatch.setattr(registry, "load_mllm", lambda name, **kw: loaded.append(name) or real(name, **kw))
    args = ["--quiet", "eval", "--model", str(tiny_llava_dir), "--tasks", "digits", "--limit", "2",
            "--encoder", str(tiny_clip_dir), "--synonyms"]
    assert main([*args, str(bad), "--out", str(tmp_path / "b")]) == 2
    assert loaded == [] and not (tmp_path / "b").exists()  # refused before the model loads
    assert main([*args, str(good), "--out", str(tmp_path / "g")]) == 0
    assert json.loads((tmp_path / "g" / "results.json").read_text())["synonyms"] == {"7": ["lucky"]}


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
