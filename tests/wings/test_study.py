"""The WINGS study end to end on tiny models: a LLaVA whose LM is the reference LLM itself, and
the same LLaVA with trained (randomised) learners, so the expected outcomes are known."""

import json
import subprocess
import sys

import numpy as np
import pytest

from retain.errors import RetainError


@pytest.fixture(scope="module")
def study_models(tiny_llava_dir, tmp_path_factory):
    """(plain LLaVA folder, WINGS folder, reference LM folder): the reference is the LLaVA's own LM."""
    from retain.zoo.tiny import build_study_pair

    reference, winged = build_study_pair(tiny_llava_dir, tmp_path_factory.mktemp("study-models"))
    return str(tiny_llava_dir), str(winged), str(reference)


def study_config(tmp_path, paths, **over):
    from retain.wings.study import WingsStudyConfig

    plain, winged, reference = paths
    kw = dict(name="s", models=[plain, winged], reference=reference, emt_tasks=["easyvqa-shape"],
              instruction_tasks=["vqa-shapes"], limit=4, text_limit=12, kl_prompts=4, interleaved_per_mix=1,
              interleaved_turns=2, attention_items=2, output_dir=str(tmp_path))
    kw.update(over)
    return WingsStudyConfig(**kw)


def test_study_measures_both_models_and_the_original_llm(tmp_path, study_models, monkeypatch):
    from retain.wings import study as S

    cfg = study_config(tmp_path, study_models)
    out = S.run_wings_study(cfg)
    res = json.loads((out / "study.json").read_text())
    plain, winged = S.model_label(study_models[0]), S.model_label(study_models[1])
    r = res["results"]
    assert res["order"] == [plain, winged, S.REFERENCE] and set(r) == set(res["order"])
    # the plain LLaVA's LM is the reference: no drift, the same text-only answers
    assert r[plain]["kl"] == pytest.approx(0.0, abs=1e-6)
    assert r[plain]["text"]["offline"] == r[S.REFERENCE]["text"]["offline"]
    assert r[plain]["interleaved"]["0"] == r[S.REFERENCE]["interleaved"]["0"]
    same = [json.loads(line)["predicted"] for line in (out / "records" / plain / "text-offline.jsonl").open()]
    ref = [json.loads(line)["predicted"] for line in (out / "records" / "original-llm" / "text-offline.jsonl").open()]
    assert same == ref and len(same) == 12
    # the length-normalised picks are reported beside the summed one, from the same records
    for how, name in (("token", "token"), ("char", "character")):
        picks = [json.loads(line)[f"correct_norm_{how}"] for line in (out / "records" / plain / "text-offline.jsonl").open()]
        assert r[plain]["text"][f"offline (per {name})"] == pytest.approx(sum(picks) / len(picks))
    # the learners change text-only behaviour: KL > 0
    assert r[winged]["kl"] > 1e-4 and r[winged]["kl"] > 1000 * abs(r[plain]["kl"])
    for label in (plain, winged):
        assert set(r[label]["multimodal"]) == {"easyvqa-shape", "vqa-shapes"}
        assert set(r[label]["interleaved"]) == {"0", "1", "2"}
        layers = len(r[label]["attention"]["before_text"])
        assert layers == 2 and len(r[label]["attention"]["reference_before_text"]) == layers
    # the table is the results, row by row
    header, rows = res["table"]["header"], res["table"]["rows"]
    assert [row[0] for row in rows] == [plain, winged, S.REFERENCE]
    col = header.index("text: offline")
    assert [row[col] for row in rows] == [r[k]["text"]["offline"] for k in res["order"]]
    mean = header.index("multimodal mean")
    assert rows[1][mean] == pytest.approx(np.mean(list(r[winged]["multimodal"].values())))
    assert (out / "table.md").read_text().startswith("| model |")
    page = (out / "report.html").read_text()
    assert page.count("<img") == 3 and "attention of post-image text" in page and "versions" in page
    # evidence: intervals on every row, and each pair compared on the same questions
    ev = res["evidence"]
    assert set(ev["multimodal"]) == {plain, winged} and set(ev["text"]) == {plain, winged, S.REFERENCE}
    for label in (plain, winged):
        for t, d in ev["multimodal"][label].items():
            lo, hi = d["interval"]
            assert lo <= d["score"] <= hi and d["score"] == pytest.approx(
                r[label]["multimodal"][t] if t != "mean" else np.mean(list(r[label]["multimodal"].values())))
    assert [(p["a"], p["b"]) for p in ev["paired"]] == [(plain, S.REFERENCE), (winged, S.REFERENCE), (plain, winged)]
    same_answers = ev["paired"][0]
    assert same_answers["n"] == 12 and same_answers["a_only"] == same_answers["b_only"] == 0
    assert same_answers["p"] == 1.0 and same_answers["interval"] == [0.0, 0.0]
    right = {k: [json.loads(line)["correct"] for line in (out / "records" / d / "text-offline.jsonl").open()]
             for k, d in ((winged, winged), (S.REFERENCE, "original-llm"))}
    w = ev["paired"][1]
    assert w["a_only"] == sum(a and not b for a, b in zip(right[winged], right[S.REFERENCE]))
    assert w["b_only"] == sum(b and not a for a, b in zip(right[winged], right[S.REFERENCE]))
    table = (out / "table.md").read_text()
    assert "McNemar p" in table and "needed gap" in table and "Intervals and paired tests" in page
    assert "seed: 0" in (out / "config.yaml").read_text()

    # a second run reads every measurement back
    def fail(*a, **k):
        raise AssertionError("measured again")

    monkeypatch.setattr(S, "measure_model", fail)
    monkeypatch.setattr(S, "measure_reference", fail)
    monkeypatch.setattr(S, "load_reference", fail)  # nor is the reference LLM loaded for nothing
    again = json.loads((S.run_wings_study(cfg) / "study.json").read_text())
    assert again["results"] == res["results"]
    # a changed setting is measured again
    with pytest.raises(AssertionError, match="measured again"):
        S.run_wings_study(study_config(tmp_path, study_models, limit=3))
    # only the original LLM's row lost: it alone is measured, prompted with the first model's processor
    monkeypatch.undo()
    monkeypatch.setattr(S, "measure_model", fail)
    (out / "models" / "original-llm.json").unlink()
    again = json.loads((S.run_wings_study(cfg) / "study.json").read_text())
    assert again["results"] == res["results"]


def _result(text, multimodal=None, digest="same"):
    return {"item_scores": {"multimodal": multimodal or {}, "text": {"offline": text}},
            "text_items": {"offline": digest}}


def test_evidence_pairs_every_row_on_the_same_items():
    from retain import stats
    from retain.wings import study as S

    ref = np.arange(400) < 200  # the reference gets the first 200 questions right
    a = ref.copy()
    a[:40], a[200:210] = False, True  # a loses 40 of them and gains 10 others: 7.5 points lower
    b = ref.copy()
    results = {"a": _result(a.astype(int).tolist(), {"t1": [1.0, 0.0, None, 1.0], "t2": [0.0, 1.0]}),
               "b": _result(b.astype(int).tolist(), {"t1": [1.0, 1.0, 1.0, 0.0], "t2": [1.0, 1.0]}),
               S.REFERENCE: _result(ref.astype(int).tolist())}
    ev = S.study_evidence(results, ["a", "b", S.REFERENCE])
    assert [(p["a"], p["b"]) for p in ev["paired"]] == [("a", S.REFERENCE), ("b", S.REFERENCE), ("a", "b")]
    p = ev["paired"][0]
    lost, gained = 40, 10
    assert (p["n"], p["b_only"], p["a_only"], p["both"], p["neither"]) == (400, lost, gained, 160, 190)
    assert p["p"] == pytest.approx(stats.mcnemar_exact(gained, lost)) and p["p"] < 1e-4
    assert p["difference"] == pytest.approx(-0.075)
    lo, hi = p["interval"]
    assert lo < p["difference"] < hi < 0  # a paired loss of this size is outside noise
    # paired: the half-width is 1.96 sd of the per-question differences / sqrt(n), with
    # Var = ((b + c) / n - ((b - c) / n)^2) / n (unpaired draws would give about twice as wide)
    half = 1.959964 * np.sqrt(((lost + gained) / 400 - ((lost - gained) / 400) ** 2) / 400)
    assert (hi - lo) / 2 == pytest.approx(half, rel=0.1)
    # an unscored item is left out of its task's score; the mean is over tasks
    t1 = ev["multimodal"]["a"]["t1"]
    assert t1["score"] == pytest.approx(2 / 3) and t1["n"] == 3
    assert ev["multimodal"]["a"]["mean"]["score"] == pytest.approx((2 / 3 + 1 / 2) / 2)
    (ih, ir), (ph, pr) = S.evidence_tables(ev)
    assert ih[0] == "model" and "multimodal mean" in ih and [row[0] for row in ir] == ["a", "b", S.REFERENCE]
    assert pr[0][ph.index("n")] == 400 and pr[0][ph.index("b")] == gained and pr[0][ph.index("c")] == lost
    # paired only on the same items
    results["b"]["text_items"]["offline"] = "other"
    with pytest.raises(RetainError, match="different offline questions"):
        S.study_evidence(results, ["a", "b", S.REFERENCE])


def test_study_bad_input(tmp_path, study_models):
    from retain.wings.study import run_wings_study

    with pytest.raises(RetainError, match="no models"):
        run_wings_study(study_config(tmp_path, study_models, models=[]))
    with pytest.raises(RetainError, match="emt_mode"):
        run_wings_study(study_config(tmp_path, study_models, emt_mode="judge"))
    with pytest.raises(RetainError, match="reference"):
        run_wings_study(study_config(tmp_path, study_models, reference=""))  # folders need a named reference
    with pytest.raises(RetainError, match="not a folder"):
        run_wings_study(study_config(tmp_path, study_models, reference=str(tmp_path / "missing")))
    with pytest.raises(RetainError, match="text_benchmarks"):
        run_wings_study(study_config(tmp_path, study_models, text_benchmarks=[{"kind": "mmlu"}]))


def test_study_cli(tmp_path, study_models):
    plain, winged, reference = study_models
    cfg = tmp_path / "study.yaml"
    cfg.write_text(f"study: wings\nname: cli\nmodels: [{plain}, {winged}]\nreference: {reference}\n"
                   f"emt_tasks: [easyvqa-color]\ninstruction_tasks: []\nlimit: 2\ntext_limit: 4\nkl_prompts: 2\n"
                   f"interleaved_per_mix: 1\ninterleaved_turns: 1\nattention_items: 1\noutput_dir: {tmp_path}\n")
    run = [sys.executable, "-m", "retain", "--quiet"]
    proc = subprocess.run(run + ["study", str(cfg), "kl_prompts=3"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "| model |" in proc.stdout and "report.html" in proc.stdout
    assert "kl_prompts: 3" in (tmp_path / "cli" / "config.yaml").read_text()
    (tmp_path / "cli" / "report.html").unlink()
    proc = subprocess.run(run + ["report", str(tmp_path / "cli")], capture_output=True, text=True)
    assert proc.returncode == 0 and (tmp_path / "cli" / "report.html").exists()
    bad = tmp_path / "bad.yaml"
    bad.write_text("study: nope\n")
    proc = subprocess.run(run + ["study", str(bad)], capture_output=True, text=True)
    assert proc.returncode == 2 and "known: wings" in proc.stderr
    proc = subprocess.run(run + ["study", str(cfg), "limitt=3"], capture_output=True, text=True)
    assert proc.returncode == 2 and "limitt" in proc.stderr
