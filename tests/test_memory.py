"""The memory estimate (retain.memory) against independent counts and measurements: LLaVA-1.5-7B's
parameters from its config alone, a tiny LLaVA's weights, gradients and AdamW state after a real
step, the activations autograd saves, and a run that cannot fit refused before it trains."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from retain.config import TrainConfig, load_config
from retain.errors import RetainError
from retain.memory import Layout, estimate, mllm_stacks, saved_activation_bytes

# LLaVA-1.5-7B, counted by hand: Llama-2-7B's published 6,738,415,616 parameters with 64 more
# vocabulary rows in the embedding and the LM head; CLIP ViT-L/14 at 336 px; the 2-layer projector.
H, I, L, V, R = 4096, 11008, 32, 32064, 128
LLAMA2_7B = 6_738_415_616
VISION = (1024 + 3 * 14 * 14 * 1024 + 577 * 1024 + 2 * 1024  # class, patch, position embeddings, pre-norm
          + 24 * (4 * (1024 * 1024 + 1024) + 4 * 1024 + (1024 * 4096 + 4096) + (4096 * 1024 + 1024))
          + 2 * 1024)  # post-norm
PROJECTOR = (1024 * 4096 + 4096) + (4096 * 4096 + 4096)
LLAVA_7B = LLAMA2_7B + 2 * (V - 32000) * H + VISION + PROJECTOR
LORA_128 = L * R * (4 * (H + H) + 2 * (H + I) + (I + H))  # q, k, v, o; gate, up; down


def llava_7b_folder(path):
    """config.json of LLaVA-1.5-7B's shape (no weights), written with transformers' own classes."""
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig

    cfg = LlavaConfig(
        text_config=LlamaConfig(hidden_size=H, intermediate_size=I, num_hidden_layers=L, num_attention_heads=32,
                                num_key_value_heads=32, vocab_size=V, max_position_embeddings=4096).to_dict(),
        vision_config=CLIPVisionConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
                                       num_attention_heads=16, image_size=336, patch_size=14,
                                       projection_dim=768).to_dict(),
        image_token_index=32000, vision_feature_layer=-2, vision_feature_select_strategy="default", dtype="float16")
    cfg.save_pretrained(path)
    return path


def estimate_cli(capsys, config, *args) -> dict:
    from retain.cli import main

    assert main(["estimate", str(config), *map(str, args), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("source", ["folder", "hub id"])
def test_llava_7b_is_counted_from_its_config_alone(tmp_path, capsys, source):
    """A folder with only config.json, or the hub id offline (HF_HUB_OFFLINE: retain's table of
    known configs): the same exact counts, and nothing downloaded or allocated."""
    model = llava_7b_folder(tmp_path / "llava") if source == "folder" else "hf:llava-hf/llava-1.5-7b-hf"
    cfg = tmp_path / "run.yaml"
    cfg.write_text(f"model: {model}\nfamily: mllm\nsequence: [digits]\nprobes: []\nmethods: [lora_ft, adapter]\n"
                   "method_args: {lora_ft: {r: 128, alpha: 256}}\ntrain: {batch_size: 64, mixed_precision: bf16}\n")
    single = estimate_cli(capsys, cfg)
    lora, adapter = single["lora_ft"], single["adapter"]
    assert adapter["total_parameters"] == LLAVA_7B == 7_063_427_072
    assert adapter["trained_parameters"] == PROJECTOR
    assert lora["total_parameters"] == LLAVA_7B + LORA_128
    assert lora["trained_parameters"] == LORA_128 + PROJECTOR
    # weights as loaded: the checkpoint's float16, PEFT's adapters in float32
    assert lora["weights_by_dtype"] == {"float16": 2 * LLAVA_7B, "float32": 4 * LORA_128}
    # AdamW: two moments like each trained parameter (adapters fp32, projector fp16) and a step per tensor
    assert lora["optimizer_bytes"] == 2 * (4 * LORA_128 + 2 * PROJECTOR) + 4 * (2 * 7 * L + 4)
    assert lora["layout"]["strategy"] == "single" and lora["micro_batch"] == 64
    # an item: 576 image tokens (24 x 24 patches) + 512 text tokens by default
    assert [s["tokens"] for s in lora["stacks"]] == [577, 576 + 512]
    # over 8 processes, FULL_SHARD (configs/accelerate/fsdp.yaml): what trains upcast to fp32, then sharded
    fsdp = estimate_cli(capsys, cfg, "--accelerate-config", "configs/accelerate/fsdp.yaml")["lora_ft"]
    trained = LORA_128 + PROJECTOR
    assert fsdp["layout"]["processes"] == 8 and fsdp["micro_batch"] == 8
    assert fsdp["optimizer_bytes"] == (8 * trained + 4 * (2 * 7 * L + 4)) // 8
    assert fsdp["gradient_bytes"] == 4 * trained // 8
    layer = 4 * H * H + 3 * H * I + 2 * H + LORA_128 // L  # the largest layer, gathered twice in bf16
    assert fsdp["weight_bytes"] == (2 * (LLAVA_7B - PROJECTOR) + 4 * trained) // 8 + 2 * layer * 2


def test_estimate_refuses_an_unknown_hub_id_offline(tmp_path, capsys):
    from retain.cli import main

    cfg = tmp_path / "run.yaml"
    cfg.write_text("model: hf:nobody/no-such-model\nfamily: mllm\nsequence: [digits]\nprobes: []\nmethods: [lora_ft]\n")
    assert main(["estimate", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "no built-in size" in err and "llava-hf/llava-1.5-7b-hf" in err


def tiny_lora(tiny_llava_dir, dropout=0.05):
    from retain.methods import create_method
    from retain.registry import load_mllm

    mllm = load_mllm(str(tiny_llava_dir))
    method = create_method("lora_ft", {"dropout": dropout}, family="mllm")
    method.setup(mllm)
    trained = list(dict.fromkeys(method.trainable(mllm)))
    for p in mllm.model.parameters():
        p.requires_grad_(False)
    for p in trained:
        p.requires_grad_(True)
    return mllm, trained


def batch_of(mllm, n=2):
    images = [np.full((8, 8, 3), 40 * k, np.uint8) for k in range(n)]
    questions = ["What is in the picture?", "Which colour is it, please?", "Is it big?", "Name it."][:n]
    return mllm.training_batch(images, questions, ["a grey square", "grey", "no", "square"][:n])


def test_counts_weights_gradients_and_adamw_state_are_exact(tiny_llava_dir):
    """Against the checkpoint file's tensors, PEFT's adapter shapes, the gradients of a real
    backward pass and the state AdamW holds after a real step."""
    from safetensors import safe_open

    mllm, trained = tiny_lora(tiny_llava_dir)
    est = estimate(mllm.model, trained, [], TrainConfig(), Layout())
    with safe_open(str(tiny_llava_dir / "model.safetensors"), "pt") as f:
        base = sum(int(np.prod(f.get_slice(k).get_shape())) for k in f.keys())
    adapters = sum(m.r["default"] * (m.in_features + m.out_features) for m in mllm.model.modules()
                   if hasattr(m, "lora_A") and "default" in getattr(m, "r", {}))
    projector = sum(p.numel() for p in mllm.projector_parameters())
    assert est.total_parameters == base + adapters
    assert est.trained_parameters == adapters + projector
    assert est.weights_by_dtype == {"float32": 4 * (base + adapters)}
    optimizer = torch.optim.AdamW(trained, lr=1e-3)
    mllm.model.train()
    batch = batch_of(mllm)
    mllm.model(**batch).loss.backward()
    optimizer.step()
    assert est.gradient_bytes == sum(p.grad.numel() * p.grad.element_size() for p in trained)
    held = sum(v.numel() * v.element_size() for state in optimizer.state.values() for v in state.values()
               if torch.is_tensor(v))
    assert len(optimizer.state) == len(trained) and est.optimizer_bytes == held


@pytest.mark.parametrize("method, dropout", [("lora_ft", 0.05), ("lora_ft", 0.0), ("adapter", 0.0)])
def test_activation_estimate_against_what_autograd_saves(tiny_llava_dir, method, dropout):
    """The LM head's part (logits, fp32 log-softmax) within 2%, the layers' part (what gradient
    checkpointing drops) within a factor 1.4, with LoRA (dropout or not) and with the LM frozen."""
    from retain.engine import enable_gradient_checkpointing

    measured, est = {}, {}
    for checkpointing in (False, True):
        mllm, trained = tiny_lora(tiny_llava_dir, dropout)
        if method == "adapter":
            trained = mllm.projector_parameters()
            for p in mllm.model.parameters():
                p.requires_grad_(False)
            for p in trained:
                p.requires_grad_(True)
        if checkpointing:
            enable_gradient_checkpointing(mllm.model, "tiny llava")
        mllm.model.train()
        batch = batch_of(mllm)
        saved, out = saved_activation_bytes(lambda: mllm.model(**batch), mllm.model.parameters())
        measured[checkpointing] = saved + out.logits.numel() * out.logits.element_size()  # the engine holds the outputs
        b, s = batch["input_ids"].shape
        ids = {id(p) for p in trained}
        names = [n for n, p in mllm.model.named_parameters() if id(p) in ids]
        e = estimate(mllm.model, trained, mllm_stacks(mllm.model.config, names, s),
                     TrainConfig(batch_size=b, gradient_checkpointing=checkpointing), Layout())
        est[checkpointing] = e.activation_parts
    # with checkpointing on, autograd keeps (outside the layers) the head's part only
    assert est[True]["LM head"] == pytest.approx(measured[True], rel=0.02)
    layers_measured = measured[False] - measured[True]  # what the layers keep without checkpointing
    layers_estimated = est[False]["LM layers"] + est[False].get("LoRA adapters", 0)
    assert 1 / 1.4 < layers_estimated / layers_measured < 1.4, (layers_estimated, layers_measured)
    assert "image layers" not in est[False]  # the frozen vision tower saves nothing


def test_a_run_that_cannot_fit_is_refused_before_it_trains(tmp_path, tiny_clip_dir, monkeypatch):
    from retain import memory
    from retain.families.dual_encoder import run_method

    monkeypatch.setattr(memory, "available_ram", lambda: 2**20)  # a machine with 1 MiB free
    cfg = load_config(None, [f"model={tiny_clip_dir}", "sequence=[digits]", "probes=[]", f"output_dir={tmp_path}",
                             "train.batch_size=8", "train.max_steps=1", "train.train_limit=8", "eval.limit=8"])
    with pytest.raises(RetainError) as e:
        run_method(cfg, "finetune")
    message = str(e.value)
    assert "needs about" in message and "CPU memory" in message and "train.gradient_checkpointing=true" in message
    assert "train.memory_check=false" in message
    run = tmp_path / "run" / "finetune"
    recorded = json.loads((run / "memory.json").read_text())
    assert recorded["device_bytes"] > 2**20 and recorded["layout"]["strategy"] == "single"
    assert not (run / "records").exists() and not (run / "checkpoints").exists()  # not even row 0 was evaluated


def test_the_gpu_docs_quote_what_the_estimate_prints(capsys, monkeypatch):
    """README's and docs/guide/gpu.md's figures for LLaVA-1.5-7B on 8 GPUs are the estimate's own
    output for the commands they show, not numbers typed in: the printed block verbatim, and each
    figure quoted in the prose from the estimate's JSON."""
    import re
    from pathlib import Path

    from retain.cli import main

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    root = Path(__file__).resolve().parents[1]
    readme, guide = (root / "README.md").read_text(), (root / "docs" / "guide" / "gpu.md").read_text()
    base = ["estimate", "configs/mcit-ucit.yaml", "methods=[lora_ft]"]
    fsdp, ddp = ["--accelerate-config", "configs/accelerate/fsdp.yaml"], ["--accelerate-config",
                                                                          "configs/accelerate/ddp.yaml"]
    monkeypatch.chdir(root)
    assert main([*base, "train.gradient_checkpointing=true", *fsdp]) == 0
    printed = capsys.readouterr().out
    block = re.search(r"`retain estimate` prints, per method:\n\n```\n(.*?)```", guide, re.S).group(1)
    assert block.strip() in printed

    def json_of(*args):
        assert main([*base, *args, "--json"]) == 0
        return json.loads(capsys.readouterr().out)["lora_ft"]

    gib = 2 ** 30
    checkpointed, plain, data_parallel = json_of("train.gradient_checkpointing=true", *fsdp), json_of(*fsdp), \
        json_of(*ddp)
    on_device = f"{checkpointed['device_bytes'] / gib:.1f} GiB per process with gradient checkpointing"
    activations = f"{plain['activation_bytes'] / gib:.0f} GiB"
    assert on_device in " ".join(readme.split()) and f"{activations} of activations without" in readme
    prose = " ".join(guide.split())
    assert f"activations are estimated at {activations} per process" in prose
    assert f"dropout alone keeps {plain['activation_parts']['LoRA adapters'] / gib:.0f} GiB" in prose
    assert f"{data_parallel['weight_bytes'] / gib:.1f} GiB of weights and adapters per GPU" in prose
