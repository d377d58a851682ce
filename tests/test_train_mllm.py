"""The MLLM trainer on a tiny random LLaVA: EMT after every epoch, adapter vs LoRA, resume, bad input."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from retain.registry import model_family
from test_cli import results, retain, tiny_config


def mllm_config(tmp_path, model, **over):
    base = {"sequence": ["digits"], "probes": [], "methods": ["adapter", "lora_ft"],
            "train": {"lr": 1e-3, "batch_size": 8, "warmup_steps": 1, "epochs": 2, "train_limit": 16},
            "eval": {"limit": 6, "emt_tasks": ["textile"], "emt_mode": "likelihood", "every_epoch": True}}
    for k, v in over.items():
        base[k] = {**base[k], **v} if isinstance(v, dict) else v
    tmp_path.mkdir(parents=True, exist_ok=True)
    return tiny_config(tmp_path, model, **base)


def test_family_is_read_from_the_model(tiny_llava_dir, tiny_clip_dir):
    assert model_family(str(tiny_llava_dir)) == "mllm"
    assert model_family(str(tiny_clip_dir)) == "dual_encoder"
    assert model_family("mini-llava") == "mllm" and model_family("mini-clip", "auto") == "dual_encoder"


def test_emt_study_run_end_to_end(tmp_path, tiny_llava_dir):
    proc = retain("run", mllm_config(tmp_path, tiny_llava_dir))
    for method in ("adapter", "lora_ft"):
        res = results(tmp_path, method)
        curve = res["evaluation"]["curve"]
        # zero-shot, after epoch 1, after the task (epoch 2): every dataset at every point
        assert [p["label"] for p in curve] == ["zero-shot", "digits epoch 1", "after digits"]
        assert all(set(p["accuracy"]) == {"digits", "textile"} for p in curve)
        assert all(sum(p["counts"]["textile"].values()) == 6 for p in curve)
        assert res["accuracy_matrix"] == [[curve[0]["accuracy"]["digits"]], [curve[-1]["accuracy"]["digits"]]]
        assert res["probes"] == ["textile"]
        cf = res["concept_forgetting"]["emt"]
        assert cf["delta"]["textile"] == pytest.approx(curve[-1]["accuracy"]["textile"] - curve[0]["accuracy"]["textile"])
        # MLLM scores carry their 95% intervals too, from the per-item EMT records
        iv = res["intervals"]
        assert iv["kind"] == "bootstrap over test items" and iv["items"] == {"digits": 6}
        lo, hi = iv["concept_forgetting"]["emt"]["delta"]["textile"]
        assert lo <= cf["delta"]["textile"] <= hi
        lo, hi = iv["metrics"]["MFT"]
        assert lo <= res["metrics"]["MFT"] <= hi
        run = tmp_path / "runs" / "tiny" / method
        assert len((run / "records" / "task-1-epoch-1.jsonl").read_text().splitlines()) == 12
        html = (run / "report.html").read_text()
        assert "EMT datasets scored by likelihood" in html
        assert "score of every evaluated dataset across fine-tuning" in html
        # failure examples with their images: at most 8 per dataset, each an embedded PNG with its label
        failures = html[html.index("<section id='emt-failures'>"):html.index("<section id='config'>")]
        wrong = sum(v for k, v in curve[-1]["counts"]["textile"].items() if k != "correct")
        assert failures.count("class='example'") == min(wrong, 8) + min(
            sum(v for k, v in curve[-1]["counts"]["digits"].items() if k != "correct"), 8)
        assert failures.count("data:image/png;base64") == failures.count("class='example'")
    table = (tmp_path / "runs" / "tiny" / "score_curves.md").read_text()
    assert table.count("| adapter |") == 3 and table.count("| lora_ft |") == 3
    assert "comparison" in proc.stdout


def test_points_every_k_steps_with_epochs_never_twice_at_one_step(tmp_path, tiny_llava_dir):
    # 16 items in batches of 8: 2 steps per epoch, 6 over 3 epochs. every_steps=2 puts a
    # point at steps 2 and 4 (6 is the task's row); the epoch ends fall on those steps and
    # are not evaluated again
    cfg = mllm_config(tmp_path, tiny_llava_dir, methods=["lora_ft"], train={"epochs": 3, "max_steps": 0},
                      eval={"every_steps": 2, "emt_tasks": []})
    retain("run", cfg)
    curve = results(tmp_path, "lora_ft")["evaluation"]["curve"]
    assert [(p["label"], p["epoch"], p["step"]) for p in curve] == [
        ("zero-shot", 0, None), ("digits step 2", 0, 2), ("digits step 4", 1, 4), ("after digits", 3, None)]
    records = tmp_path / "runs" / "tiny" / "lora_ft" / "records"
    assert sorted(f.name for f in records.glob("task-*")) == ["task-1-step-2.jsonl", "task-1-step-4.jsonl"]
    # every 4 steps with epochs: step 4, and the end of epoch 1 (step 2) as its own point
    retain("run", mllm_config(tmp_path / "b", tiny_llava_dir, methods=["lora_ft"], train={"epochs": 3, "max_steps": 0},
                              eval={"every_steps": 4, "emt_tasks": []}))
    curve = results(tmp_path / "b", "lora_ft")["evaluation"]["curve"]
    assert [p["label"] for p in curve] == ["zero-shot", "digits epoch 1", "digits step 4", "after digits"]


def test_adapter_trains_the_projector_only_and_lora_adds_adapters(tmp_path, tiny_llava_dir):
    from transformers import LlavaForConditionalGeneration

    retain("run", mllm_config(tmp_path, tiny_llava_dir, train={"epochs": 1}, eval={"every_epoch": False}))
    base = {n: p for n, p in LlavaForConditionalGeneration.from_pretrained(tiny_llava_dir).named_parameters()}
    saved = {}
    for method in ("adapter", "lora_ft"):
        saved[method] = load_file(str(tmp_path / "runs" / "tiny" / method / "checkpoints" / "after-task-1" / "model.safetensors"))
    assert saved["adapter"] and all("multi_modal_projector" in n for n in saved["adapter"])
    for n, v in saved["adapter"].items():  # trained: the projector moved
        assert not torch.equal(v, base[n])
    lora = [n for n in saved["lora_ft"] if "lora_" in n]
    assert lora and all("language_model" in n for n in lora)
    assert {n for n in saved["lora_ft"] if "lora_" not in n} == {"base_model.model." + n for n in saved["adapter"]}


def test_lora_equals_its_merged_weights(tiny_llava_dir):
    from retain.methods.lora import LoRAOptions, inject_lora
    from retain.registry import load_mllm

    mllm = load_mllm(str(tiny_llava_dir))
    inject_lora(mllm, LoRAOptions(r=4, alpha=8, dropout=0.0))
    torch.manual_seed(1)
    with torch.no_grad():
        for n, p in mllm.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.5)
    batch = mllm.training_batch(None, ["What is 2 plus 3?"], ["5"])
    batch.pop("labels")
    with torch.no_grad():
        adapted = mllm.model(**batch).logits
        merged = copy.deepcopy(mllm.model).merge_and_unload()
        plain = load_mllm(str(tiny_llava_dir)).model(**batch).logits
        assert torch.allclose(merged(**batch).logits, adapted, atol=1e-5)
        assert not torch.allclose(plain, adapted, atol=1e-3)  # the adapters do change the output
    # merging by hand: W + (alpha / r) B A on one projection
    lin = mllm.model.base_model.model.model.language_model.layers[0].self_attn.q_proj
    W = lin.base_layer.weight + 2.0 * lin.lora_B["default"].weight @ lin.lora_A["default"].weight
    layer = merged.model.language_model.layers[0].self_attn.q_proj.weight
    assert torch.allclose(W, layer, atol=1e-6)


@pytest.mark.parametrize("method", ["lora_ft", "disco", "sefe"])
def test_mllm_resume_after_kill_gives_same_results(tmp_path, tiny_llava_dir, method):
    """lora_ft: one adapter; disco: adapters and router rebuilt from the checkpoint; sefe: merged weights."""
    over = {"sequence": ["digits", "textile"], "methods": [method], "train": {"epochs": 1},
            "eval": {"every_epoch": False, "emt_tasks": []}}
    retain("run", mllm_config(tmp_path / "a", tiny_llava_dir, **over))
    killed = retain("run", mllm_config(tmp_path / "b", tiny_llava_dir, **over), kill_after=1, check=False)
    assert killed.returncode != 0
    assert not (tmp_path / "b" / "runs" / "tiny" / method / "results.json").exists()
    refused = retain("run", mllm_config(tmp_path / "b", tiny_llava_dir, **over), check=False)
    assert refused.returncode == 2 and "--resume" in refused.stderr
    retain("run", mllm_config(tmp_path / "b", tiny_llava_dir, **over), "--resume")
    a, b = results(tmp_path / "a", method), results(tmp_path / "b", method)
    assert a["accuracy_matrix"] == b["accuracy_matrix"] and a["evaluation"]["curve"] == b["evaluation"]["curve"]


@pytest.mark.parametrize("override, message", [
    (["probes=[fashion-mnist]"], "move them to eval.emt_tasks"),
    (["methods=[ldifs]"], "applies to dual_encoder models, not to this mllm model"),
    (["eval.emt_mode=judge"], "not available in training runs"),
    (["family=vision"], "'family' must be one of auto, dual_encoder, mllm, got 'vision'"),
    (["eval.synonyms={pony: [foal]}"], "class 'pony', which is in no EMT dataset's label set"),
    (["eval.every_steps=-2"], "every_steps"),
])
def test_bad_mllm_config_is_one_clear_message(tmp_path, tiny_llava_dir, override, message):
    proc = retain("run", mllm_config(tmp_path, tiny_llava_dir), *override, check=False)
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr[-1500:]
    assert "Traceback" not in proc.stderr
    assert not list((tmp_path / "runs").glob("**/results.json"))


def test_instruction_sequence_with_conversation_files(tmp_path, tiny_llava_dir):
    from PIL import Image

    (tmp_path / "img").mkdir(parents=True)
    items = []
    for k in range(12):
        Image.fromarray(np.full((8, 8, 3), 20 * k, np.uint8)).save(tmp_path / "img" / f"{k}.png")
        items.append({"id": k, "image": f"img/{k}.png", "conversations": [
            {"from": "human", "value": "<image>\nIs it dark?"}, {"from": "gpt", "value": "yes" if k < 6 else "no"}]})
    (tmp_path / "conv.json").write_text(json.dumps(items))
    mine = {"name": "darkness", "train": str(tmp_path / "conv.json"), "test": str(tmp_path / "conv.json"), "scorer": "vqa"}
    retain("run", mllm_config(tmp_path, tiny_llava_dir, sequence=["digit-read", mine], methods=["lora_ft"],
                              train={"epochs": 1}, eval={"every_epoch": False, "emt_tasks": ["textile"]}))
    res = results(tmp_path, "lora_ft")
    assert res["sequence"] == ["digit-read", "darkness"] and np.asarray(res["accuracy_matrix"]).shape == (3, 2)
    assert res["probes"] == ["textile"]
    records = [json.loads(x) for x in (tmp_path / "runs" / "tiny" / "lora_ft" / "records" / "row-2.jsonl").read_text().splitlines()]
    dark = [r for r in records if r["task"] == "darkness"]
    assert len(dark) == 6 and all(r["references"] in (["yes"], ["no"]) for r in dark)
    assert res["accuracy_matrix"][2][1] == pytest.approx(np.mean([r["score"] for r in dark]))
    assert len([r for r in records if r["task"] == "textile"]) == 6


def test_answer_longer_than_the_context_is_named(tmp_path, tiny_llava_dir):
    items = [{"id": "long-one", "conversations": [{"from": "human", "value": "Tell me everything."},
                                                  {"from": "gpt", "value": "word " * 700}]}]
    (tmp_path / "long.json").write_text(json.dumps(items))
    tmp_path.mkdir(exist_ok=True)
    spec = {"name": "chatty", "train": str(tmp_path / "long.json"), "test": str(tmp_path / "long.json")}
    proc = retain("run", mllm_config(tmp_path, tiny_llava_dir, sequence=[spec], methods=["lora_ft"]), check=False)
    assert proc.returncode == 2 and "Item 0 of task 'chatty'" in proc.stderr and "context of 512" in proc.stderr


def test_every_mcit_method_runs_through_a_sequence(tmp_path, tiny_llava_dir):
    methods = ["adapter", "lora_ft", "replay", "ewc", "l2sp", "olora", "moelora", "sefe", "disco", "hide",
               "modalprompt", "clmoe", "wings"]
    # textile is scored by EMT likelihood too: the routed methods rank options per routed group
    retain("run", mllm_config(tmp_path, tiny_llava_dir, sequence=["digit-read", "textile-inspect"], methods=methods,
                              train={"epochs": 1}, eval={"every_epoch": False}), timeout=1800)  # 13 methods
    table = (tmp_path / "runs" / "tiny" / "comparison.md").read_text()
    for m in methods:
        res = results(tmp_path, m)
        A = np.asarray(res["accuracy_matrix"])
        assert A.shape == (3, 2) and ((A >= 0) & (A <= 1)).all()
        assert set(res["metrics"]) >= {"MFT", "MFN", "MAA", "BWT", "forgetting"}
        assert f"| {m} |" in table
        assert len(res["evaluation"]["curve"][-1]["counts"]["textile"]) > 0


def test_mllm_run_under_accelerate_launch(tmp_path, tiny_llava_dir):
    import os
    import subprocess
    import sys

    from test_cli import ROOT

    cfg = mllm_config(tmp_path, tiny_llava_dir, methods=["lora_ft"], train={"epochs": 1}, eval={"every_epoch": False})
    proc = subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", "2",
                           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                           "-m", "retain", "run", str(cfg)], cwd=ROOT, env={**os.environ, "RETAIN_QUIET": "1"},
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert np.asarray(results(tmp_path, "lora_ft")["accuracy_matrix"]).shape == (2, 1)


def _judged_task(tmp_path):
    items = [{"id": k, "conversations": [{"from": "human", "value": f"What is {k} plus 1?"},
                                         {"from": "gpt", "value": str(k + 1)}]} for k in range(6)]
    (tmp_path / "sums.json").write_text(json.dumps(items))
    return {"name": "sums", "train": str(tmp_path / "sums.json"), "test": str(tmp_path / "sums.json"), "scorer": "judge"}


def test_a_judge_scored_run_with_a_dead_judge_stops_at_once(tmp_path, tiny_llava_dir):
    import time

    from loopback import dead_url

    tmp_path.mkdir(parents=True, exist_ok=True)
    cfg = mllm_config(tmp_path, tiny_llava_dir, sequence=[_judged_task(tmp_path)], methods=["lora_ft"],
                      train={"epochs": 1}, eval={"every_epoch": False, "emt_tasks": []})
    url, start = dead_url(), time.monotonic()
    proc = retain("run", cfg, f"eval.judge_url={url}", "eval.judge_model=judge-m", check=False)
    assert time.monotonic() - start < 60
    assert proc.returncode == 2 and f"Nothing answers at the chat endpoint {url} (model 'judge-m')" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not list((tmp_path / "runs").glob("**/results.json"))  # no 0.0 written as if measured


@pytest.mark.parametrize("key_env, message", [
    ("AWS_SECRET_ACCESS_KEY", "only variables whose names end in _API_KEY or _TOKEN"),
    ("RETAIN_TEST_API_KEY", "comes from a config file"),
])
def test_a_config_cannot_send_a_key_to_a_host_of_its_choosing(tmp_path, tiny_llava_dir, key_env, message):
    tmp_path.mkdir(parents=True, exist_ok=True)
    cfg = mllm_config(tmp_path, tiny_llava_dir, sequence=[_judged_task(tmp_path)], methods=["lora_ft"],
                      eval={"judge_url": "http://collector.example/v1", "judge_model": "m", "judge_key_env": key_env})
    proc = retain("run", cfg, check=False, env={key_env: "sk-secret", "RETAIN_LLM_HOSTS": ""})
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr[-1500:]
    assert "sk-secret" not in proc.stderr + proc.stdout
    if key_env == "RETAIN_TEST_API_KEY":
        assert "RETAIN_LLM_HOSTS=collector.example" in proc.stderr and "eval.judge_url=http://collector.example/v1" in proc.stderr


def test_an_unscored_cell_is_none_in_results_not_zero():
    from retain.config import RunConfig
    from retain.families.mllm import assemble_results

    points = [{"label": "zero-shot", "task_index": -1, "epoch": 0, "accuracy": {"a": None, "b": 0.5}, "counts": {},
               "unscored": {"a": 6}},
              {"label": "after a", "task_index": 0, "epoch": 1, "accuracy": {"a": 0.75, "b": 0.25}, "counts": {},
               "unscored": {"a": 2}}]
    res = assemble_results(RunConfig(model="mini-llava"), "lora_ft", ["a", "b"],
                           {"rows": [[None, 0.5], [0.75, 0.25], [0.5, 0.25]], "points": points})
    assert res["accuracy_matrix"] == [[None, 0.5], [0.75, 0.25], [0.5, 0.25]]
    assert res["unscored"] == {"zero-shot": {"a": 6}, "after a": {"a": 2}}
    assert res["final_task_accuracy"] == {"a": 0.5, "b": 0.25}
    assert 0.0 not in res["accuracy_matrix"][0]
    json.dumps(res, allow_nan=False)  # valid JSON: no NaN
