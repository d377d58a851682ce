"""The WINGS study end to end on tiny models: a LLaVA whose LM is the reference LLM itself, and
the same LLaVA with trained (randomised) learners, so the expected outcomes are known."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from retain.errors import RetainError


@pytest.fixture(scope="module")
def study_models(tiny_llava_dir, tmp_path_factory):
    """(plain LLaVA folder, WINGS folder, reference LM folder): the reference is the LLaVA's own LM."""
    from transformers import LlamaForCausalLM

    from retain.registry import load_mllm
    from retain.wings.inject import inject_wings, save_wings_model

    root = tmp_path_factory.mktemp("study-models")
    mllm = load_mllm(str(tiny_llava_dir))
    lm = LlamaForCausalLM(mllm.model.config.text_config)
    lm.model.load_state_dict(mllm.model.model.language_model.state_dict())
    lm.lm_head.load_state_dict(mllm.model.lm_head.state_dict())
    lm.save_pretrained(root / "reference", safe_serialization=True)
    mllm.tokenizer.save_pretrained(root / "reference")
    wings = inject_wings(mllm.model, rank=4)
    torch.manual_seed(3)
    with torch.no_grad():
        for layer in wings.layers:
            for learner in (layer.visual, layer.textual):
                for part in (learner.q, learner.k, learner.v, learner.o):
                    part.B.normal_(0, 3.0)
    save_wings_model(mllm.model, mllm.processor, root / "tiny-wings")
    return str(tiny_llava_dir), str(root / "tiny-wings"), str(root / "reference")


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
