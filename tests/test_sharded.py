"""Training beyond one process: the shipped accelerate configs as accelerate reads them (a typo is
caught), gradient accumulation and checkpointing against their plain equivalents, a bf16 run, and
retain's own entry point launched on 2 CPU processes with DDP, and with FSDP2 (accelerate sets
FSDP up on GPUs only: the FSDP test lifts that one gate, docs/guide/gpu.md), killed and resumed."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from unittest import mock

import numpy as np
import pytest
import torch
import yaml

from conftest import need
from retain.config import load_config
from retain.engine import enable_gradient_checkpointing, make_accelerator, optimise
from retain.errors import RetainError
from retain.methods.base import Method, TaskContext
from retain.rundir import RunDir

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs" / "accelerate"


# ---- the accelerate configs -----------------------------------------------------------------


def launch_plugin(path: Path):
    """The config file as `accelerate launch` reads it: its arguments, the environment it gives
    the processes, and the FSDP or DeepSpeed plugin those processes build from that environment."""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils import DeepSpeedPlugin, FullyShardedDataParallelPlugin
    from accelerate.utils.launch import prepare_deepspeed_cmd_env, prepare_multi_gpu_env

    args = launch_command_parser().parse_args(["--config_file", str(path), "train.py"])
    args, defaults, mixed_from_config = _validate_launch_command(args)
    if args.use_deepspeed:  # as launch_command does before its DeepSpeed launcher
        fields = list(defaults.deepspeed_config) + (["mixed_precision"] if mixed_from_config else [])
        args.deepspeed_fields_from_accelerate_config = ",".join(fields)
        env = prepare_deepspeed_cmd_env(args)[1]
    else:
        env = prepare_multi_gpu_env(args)
    with mock.patch.dict(os.environ, env, clear=True):
        plugin = (DeepSpeedPlugin() if args.use_deepspeed else FullyShardedDataParallelPlugin() if args.use_fsdp
                  else None)
    return args, env, plugin


def unknown_keys(path: Path) -> list[str]:
    """Keys accelerate (or DeepSpeed) would not use. accelerate's loader refuses unknown top-level
    keys itself; a key inside deepspeed_config or fsdp_config that `accelerate launch` has no
    argument for is dropped silently, and so is a DeepSpeed JSON key DeepSpeed does not know."""
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.commands.launch import launch_command_parser

    try:
        load_config_from_file(str(path))
    except ValueError as e:
        return [str(e)]
    known = {a.dest for a in launch_command_parser()._actions}
    data = yaml.safe_load(path.read_text())
    bad = [f"deepspeed_config.{k}" for k in data.get("deepspeed_config", {}) if k not in known]
    bad += [f"fsdp_config.{k}" for k in data.get("fsdp_config", {})
            if (k if k.startswith("fsdp_") else f"fsdp_{k}") not in known]
    ds_file = data.get("deepspeed_config", {}).get("deepspeed_config_file")
    if ds_file:
        need("deepspeed")
        import deepspeed.runtime.constants as ds_constants
        from deepspeed.runtime.zero.config import ZERO_OPTIMIZATION, DeepSpeedZeroConfig

        ds = json.loads((ROOT / ds_file if not Path(ds_file).is_absolute() else Path(ds_file)).read_text())
        names = {v for v in vars(ds_constants).values() if isinstance(v, str)} | {ZERO_OPTIMIZATION}
        bad += [f"{ds_file}: {k}" for k in ds if k not in names]
        try:
            DeepSpeedZeroConfig(**ds.get("zero_optimization", {}))  # pydantic: extra keys are errors
        except ValueError as e:
            bad.append(f"{ds_file}: zero_optimization: {e}")
    return bad


def test_ddp_config():
    args, env, _ = launch_plugin(CONFIGS / "ddp.yaml")
    assert args.multi_gpu and args.num_processes == 8 and env["ACCELERATE_MIXED_PRECISION"] == "bf16"
    assert unknown_keys(CONFIGS / "ddp.yaml") == []


def test_fsdp_config_full_shard_by_llava_layers():
    from accelerate.utils.dataclasses import get_module_class_from_name

    from retain.memory import KNOWN_CONFIGS, model_config, skeleton

    args, env, plugin = launch_plugin(CONFIGS / "fsdp.yaml")
    assert args.use_fsdp and args.num_processes == 8 and env["ACCELERATE_MIXED_PRECISION"] == "bf16"
    assert plugin.fsdp_version == 2 and plugin.reshard_after_forward is True  # FULL_SHARD
    assert plugin.auto_wrap_policy.__name__ == "transformer_auto_wrap_policy"
    assert plugin.transformer_cls_names_to_wrap == ["LlamaDecoderLayer", "CLIPEncoderLayer"]
    assert str(plugin.state_dict_type).endswith("FULL_STATE_DICT")
    assert type(plugin.cpu_offload).__name__ == "OffloadPolicy" and not plugin.activation_checkpointing  # no offload
    assert unknown_keys(CONFIGS / "fsdp.yaml") == []
    # the classes are LLaVA-1.5-7B's (accelerate stops on a name the model does not have)
    llava = skeleton(model_config("llava-hf/llava-1.5-7b-hf"))
    assert "llava-hf/llava-1.5-7b-hf" in KNOWN_CONFIGS
    for name in plugin.transformer_cls_names_to_wrap:
        assert get_module_class_from_name(llava, name) is not None


@pytest.mark.parametrize("name, stage, bf16", [("deepspeed_zero2.yaml", 2, True), ("deepspeed_zero3.yaml", 3, "auto")])
def test_deepspeed_configs_through_accelerate(name, stage, bf16):
    """Through `accelerate launch`'s own reading (arguments, environment, DeepSpeedPlugin, which
    also refuses settings a DeepSpeed JSON makes meaningless) and DeepSpeed's own config model."""
    args, env, plugin = launch_plugin(CONFIGS / name)
    assert args.use_deepspeed and args.num_processes == 8
    assert plugin.zero_stage == stage and plugin.deepspeed_config["zero_optimization"]["stage"] == stage
    zero = plugin.deepspeed_config["zero_optimization"]
    assert zero["offload_optimizer"]["device"] == "none" and zero["offload_param"]["device"] == "none"
    # retain fills these from train.gradient_accumulation and train.grad_clip
    assert plugin.deepspeed_config["gradient_accumulation_steps"] == "auto"
    assert plugin.deepspeed_config["gradient_clipping"] == "auto"
    if bf16 is True:
        assert env["ACCELERATE_MIXED_PRECISION"] == "bf16"
    else:  # with a JSON file, the JSON says it: "auto", from train.mixed_precision
        assert plugin.deepspeed_config["bf16"]["enabled"] == "auto"
        assert zero["stage3_gather_16bit_weights_on_model_save"] is True
    assert unknown_keys(CONFIGS / name) == []


@pytest.mark.parametrize("name, where, typo", [
    ("ddp.yaml", None, ("num_processes", "num_procesess")),
    ("deepspeed_zero2.yaml", "deepspeed_config", ("zero_stage", "zero_stge")),
    ("fsdp.yaml", "fsdp_config", ("fsdp_reshard_after_forward", "fsdp_reshard_after_forwrd")),
    ("deepspeed_zero3.json", "zero_optimization", ("overlap_comm", "overlap_com")),
    ("deepspeed_zero3.json", None, ("gradient_clipping", "gradient_cliping")),
])
def test_a_typo_in_a_config_is_caught(tmp_path, name, where, typo):
    old, new = typo
    text = (CONFIGS / name).read_text()
    assert f'"{old}"' in text or f"{old}:" in text
    (tmp_path / name).write_text(text.replace(f'"{old}"', f'"{new}"').replace(f"{old}:", f"{new}:"))
    path = tmp_path / name
    if name.endswith(".json"):  # through the YAML that names it
        zero3 = (CONFIGS / "deepspeed_zero3.yaml").read_text()
        path = tmp_path / "zero3.yaml"
        path.write_text(zero3.replace("configs/accelerate/deepspeed_zero3.json", str(tmp_path / name)))
    bad = unknown_keys(path)
    assert len(bad) == 1 and new in bad[0], bad


# ---- gradient accumulation, checkpointing, bf16 -----------------------------------------------


class TrainsAll(Method):
    name = "trains_all"

    def trainable(self, model):
        return list(model.parameters())

    def task_loss(self, batch, outputs, ctx):
        return outputs


def accumulated_run(tmp_path, k: int, batch_size: int = 8, items: int = 24, clip: float = 0.0):
    """A float64 two-layer model trained 3 steps of `batch_size` items in `k` micro-batches each;
    returns its final parameters, the gradients each optimizer step used (after clipping), the
    (loss, lr) of every step and the micro-batches seen."""
    from torch.optim.optimizer import register_optimizer_step_pre_hook

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.Tanh(), torch.nn.Linear(7, 1)).double()
    x, y = torch.randn(items, 5, dtype=torch.float64), torch.randn(items, 1, dtype=torch.float64)
    cfg = load_config(None, [f"train.batch_size={batch_size}", f"train.gradient_accumulation={k}", "train.max_steps=3",
                             "train.warmup_steps=1", "train.lr=0.1", "train.weight_decay=0.01", f"train.grad_clip={clip}"])
    run = RunDir(tmp_path)
    accelerator, _ = make_accelerator(cfg, run)
    steps, seen, grads = [], [], []
    tracker = SimpleNamespace(log_step=lambda loss, lr: steps.append((loss, lr)))
    task = SimpleNamespace(name="toy")
    ctx = TaskContext(task=task, index=0, train=range(items), model=model, tasks=[task], train_splits=[None],
                      device=torch.device("cpu"), seed=0, batch_size=batch_size, tracker=tracker)
    prepared = {}

    def loss(batch):
        seen.append(len(batch))
        return (prepared["module"](x[batch]) - y[batch]).pow(2).mean()

    hook = register_optimizer_step_pre_hook(lambda opt, *_: grads.append([p.grad.clone() for p in model.parameters()]))
    try:
        optimise(accelerator, model, TrainsAll(), ctx, cfg, run, lambda idx: torch.tensor(idx), loss,
                 on_prepare=lambda m: prepared.update(module=m))
    finally:
        hook.remove()
    return [p.detach().clone() for p in model.parameters()], grads, steps, seen


@pytest.mark.parametrize("clip", [0.0, 0.05])
def test_gradient_accumulation_is_one_step_over_the_whole_batch(tmp_path, clip):
    """k micro-batches of b/k items give each AdamW step the same gradient (clipped or not) as one
    batch of b, so the same update: float64, equal to rounding. A step (max_steps, the schedule,
    the logged loss) is an optimizer step."""
    one, one_grads, one_steps, one_seen = accumulated_run(tmp_path / "a", k=1, clip=clip)
    four, four_grads, four_steps, four_seen = accumulated_run(tmp_path / "b", k=4, clip=clip)
    assert one_seen == [8] * 3 and four_seen == [2] * 12
    assert len(one_grads) == len(four_grads) == len(one_steps) == len(four_steps) == 3
    for ga, gb in zip(one_grads, four_grads):
        for a, b in zip(ga, gb):
            torch.testing.assert_close(b, a, rtol=0, atol=1e-13)
    if clip:  # clipping acted: each step's gradient norm is the clip
        assert all(torch.cat([g.flatten() for g in grads]).norm().item() == pytest.approx(clip, rel=1e-5)  # torch adds 1e-6
                   for grads in one_grads)
    for (la, ra), (lb, rb) in zip(one_steps, four_steps):  # the logged loss is the step's mean, the lr per step
        assert lb == pytest.approx(la, rel=1e-12, abs=1e-15) and ra == rb
    for a, b in zip(one, four):
        torch.testing.assert_close(b, a, rtol=0, atol=1e-12)
    torch.manual_seed(0)
    start = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.Tanh(), torch.nn.Linear(7, 1)).double()
    assert all((a - s).abs().max() > 1e-3 for a, s in zip(one, start.parameters()))  # it did train


def test_a_task_smaller_than_one_accumulated_step_is_refused(tmp_path):
    with pytest.raises(RetainError, match="fewer than the 4 one step accumulates"):
        accumulated_run(tmp_path, k=4, batch_size=16, items=8)


def test_gradient_checkpointing_gives_the_same_loss_and_gradients(tiny_llava_dir):
    """float64, LoRA and projector trained: equal to rounding with and without, and the layers do
    run twice (the forward again in the backward pass), so checkpointing is really on."""
    from transformers.models.llama.modeling_llama import LlamaDecoderLayer

    from retain.methods import create_method
    from retain.registry import load_mllm

    runs = []
    for checkpointing in (False, True):
        mllm = load_mllm(str(tiny_llava_dir), dtype=torch.float64)
        method = create_method("lora_ft", {"dropout": 0.0}, family="mllm")
        torch.manual_seed(0)  # LoRA's A is drawn at random
        method.setup(mllm)
        with torch.no_grad():  # LoRA's B starts at zero: give the adapters something to carry
            for n, p in mllm.model.named_parameters():
                if "lora_B" in n:
                    p.normal_(0, 0.1, generator=torch.Generator().manual_seed(len(n)))
        trained = method.trainable(mllm)
        for p in mllm.model.parameters():
            p.requires_grad_(False)
        for p in trained:
            p.requires_grad_(True)
        if checkpointing:
            assert enable_gradient_checkpointing(mllm.model, "tiny llava") >= 1
        calls = []
        for m in mllm.model.modules():
            if isinstance(m, LlamaDecoderLayer):
                # transformers checkpoints the layer's forward (its own hooks run once): count its first op
                m.input_layernorm.register_forward_pre_hook(lambda *_: calls.append(1))
        mllm.model.train()
        batch = mllm.training_batch([np.full((8, 8, 3), 90, np.uint8)] * 2, ["What is it?", "And this?"], ["grey", "a square"])
        loss = mllm.model(**batch).loss
        loss.backward()
        runs.append((loss.item(), [p.grad.clone() for p in trained], len(calls)))
    (loss_a, grads_a, calls_a), (loss_b, grads_b, calls_b) = runs
    assert calls_a == 2 and calls_b == 4  # 2 layers; each again in the backward pass
    assert loss_b == pytest.approx(loss_a, rel=1e-12)
    assert all(g.abs().max() > 0 for g in grads_a)
    for a, b in zip(grads_a, grads_b):
        torch.testing.assert_close(b, a, rtol=1e-10, atol=1e-12)


def test_gradient_checkpointing_is_refused_for_a_model_without_it():
    with pytest.raises(RetainError, match="train.gradient_checkpointing: my-mlp holds no transformers model"):
        enable_gradient_checkpointing(torch.nn.Sequential(torch.nn.Linear(2, 2)), "my-mlp")


@pytest.fixture
def fresh_accelerate_state():
    """accelerate keeps one state per process, whose mixed precision cannot change: reset it
    around a test that needs another (as accelerate's own AccelerateTestCase does)."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(True)
    yield
    AcceleratorState._reset_state(True)


def test_a_bf16_run_with_accumulation_and_checkpointing_is_finite(tmp_path, tiny_llava_dir, monkeypatch,
                                                                 fresh_accelerate_state):
    """The engine on CPU under accelerate's bf16 autocast: the LM's layers compute under bfloat16
    autocast, both options reach the model, and the run finishes with finite scores and losses."""
    from transformers import PreTrainedModel
    from transformers.models.llama.modeling_llama import LlamaMLP

    from retain.families.mllm import run_method
    from retain.methods.lora_ft import LoRAFT

    autocast, losses, enabled = set(), [], []
    mlp = LlamaMLP.forward
    monkeypatch.setattr(LlamaMLP, "forward", lambda self, x: (
        autocast.add((torch.is_grad_enabled(), torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu"))),
        mlp(self, x))[1])
    task_loss = LoRAFT.task_loss
    monkeypatch.setattr(LoRAFT, "task_loss", lambda self, batch, outputs, ctx: (
        losses.append(task_loss(self, batch, outputs, ctx)), losses[-1])[1])
    enable = PreTrainedModel.activation_checkpointing_enable
    monkeypatch.setattr(PreTrainedModel, "activation_checkpointing_enable",
                        lambda self, *a, **kw: (enabled.append(type(self).__name__), enable(self, *a, **kw))[1])
    cfg = load_config(None, [f"model={tiny_llava_dir}", "sequence=[digits]", "probes=[]", f"output_dir={tmp_path}",
                             "train.batch_size=8", "train.gradient_accumulation=2", "train.gradient_checkpointing=true",
                             "train.mixed_precision=bf16", "train.lr=1e-3", "train.warmup_steps=1", "train.train_limit=16",
                             "eval.limit=6", "eval.emt_mode=likelihood"])
    res = run_method(cfg, "lora_ft")
    assert (True, True, torch.bfloat16) in autocast and not any(grad and not on for grad, on, _ in autocast)
    assert len(losses) == 4 and all(math.isfinite(v.item()) for v in losses)  # 2 steps of 2 micro-batches
    assert enabled == ["LlavaForConditionalGeneration"]
    A = np.asarray(res["accuracy_matrix"], dtype=float)
    assert A.shape == (2, 1) and np.isfinite(A).all()
    memory = json.loads((tmp_path / "run" / "lora_ft" / "memory.json").read_text())
    assert memory["layout"]["mixed_precision"] == "bf16" and memory["gradient_checkpointing"] is True
    assert memory["micro_batch"] == 4 and memory["gradient_accumulation"] == 2


def test_a_launch_asking_bf16_with_a_config_saying_no_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "bf16")
    with pytest.raises(RetainError, match="set train.mixed_precision=bf16"):
        make_accelerator(load_config(None, []), RunDir(tmp_path))


# ---- retain's entry point on 2 CPU processes ------------------------------------------------------

SHIM = '''"""accelerate sets FSDP up only where the processes have GPUs (or NPUs, XPUs...): on CPU
processes it silently gives plain data parallel. This test-only shim lifts that one gate, so
torch's FSDP2 (fully_shard over gloo) runs through accelerate's own FSDP2 preparation."""
import runpy
import sys

from accelerate.state import AcceleratorState
from accelerate.utils import DistributedType

_init = AcceleratorState.__init__


def init(self, *args, **kwargs):
    _init(self, *args, **kwargs)
    plugin = kwargs.get("fsdp_plugin")
    if plugin is not None and self.distributed_type == DistributedType.MULTI_CPU:
        self.distributed_type = DistributedType.FSDP
        if self._mixed_precision != "no":
            plugin.set_mixed_precision(self._mixed_precision)
        self.fsdp_plugin = plugin


AcceleratorState.__init__ = init
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
'''


def launch(config_file: Path, script: list[str], env: dict | None = None, timeout: int = 600):
    """`accelerate launch --config_file ... --num_processes 2` on CPU processes (gloo)."""
    e = {**os.environ, "RETAIN_QUIET": "1", "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1", **(env or {})}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config_file), "--num_processes", "2",
           "--mixed_precision", "no", "--main_process_port", "0", *script]
    return subprocess.run(cmd, cwd=ROOT, env=e, capture_output=True, text=True, timeout=timeout)


def two_task_config(tmp_path: Path, model: Path) -> Path:
    cfg = {"name": "tiny", "model": str(model), "sequence": ["digits", "textile"], "probes": [], "methods": ["lora_ft"],
           "output_dir": str(tmp_path / "runs"), "method_args": {"lora_ft": {"r": 4, "alpha": 8}},
           "train": {"lr": 1e-3, "batch_size": 8, "gradient_accumulation": 2, "warmup_steps": 1, "train_limit": 16},
           "eval": {"limit": 6, "emt_mode": "rule", "max_new_tokens": 8}}  # rule: generation on the sharded model
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.mark.parametrize("sharding", ["ddp", "fsdp"])
def test_two_cpu_processes_train_checkpoint_and_resume(tmp_path, tiny_llava_dir, sharding):
    """retain's CLI on 2 processes, killed once task 1 is committed; its checkpoint holds whole
    trained tensors, and a single process resumes from it to finite results."""
    from safetensors.torch import load_file
    from transformers import LlavaForConditionalGeneration

    cfg = two_task_config(tmp_path, tiny_llava_dir)
    killer = [str(ROOT / "tests" / "killer.py"), "1", "run", str(cfg)]
    if sharding == "fsdp":
        (tmp_path / "shim.py").write_text(SHIM)
        proc = launch(CONFIGS / "fsdp.yaml", [str(tmp_path / "shim.py"), *killer])
    else:
        proc = launch(CONFIGS / "ddp.yaml", killer)
    run = tmp_path / "runs" / "tiny" / "lora_ft"
    assert proc.returncode != 0 and (run / "state.json").exists(), proc.stderr[-3000:]
    state = json.loads((run / "state.json").read_text())
    assert state["done_tasks"] == 1 and not (run / "results.json").exists()
    memory = json.loads((run / "memory.json").read_text())
    assert memory["layout"]["processes"] == 2 and memory["layout"]["strategy"] == sharding
    assert memory["micro_batch"] == 2  # 8 items a step: 2 processes x 2 micro-batches x 2 items
    saved = load_file(str(run / "checkpoints" / "after-task-1" / "model.safetensors"))
    shapes = {n: p.shape for n, p in LlavaForConditionalGeneration.from_pretrained(tiny_llava_dir).named_parameters()}
    lora = {n: t for n, t in saved.items() if "lora_" in n}
    assert lora and all(t.shape[0 if "lora_A" in n else 1] == 4 for n, t in lora.items())  # rank 4: (r, in), (out, r)
    assert all(t.abs().max() > 0 for n, t in lora.items() if "lora_B" in n)  # trained (B starts at zero)
    projector = {n.removeprefix("base_model.model."): t for n, t in saved.items() if "lora_" not in n}
    assert projector and all(t.shape == shapes[n] for n, t in projector.items())
    proc = subprocess.run([sys.executable, "-m", "retain", "run", str(cfg), "--resume"], cwd=ROOT,
                          env={**os.environ, "RETAIN_QUIET": "1"}, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads((run / "results.json").read_text())
    A = np.asarray(res["accuracy_matrix"], dtype=float)
    assert A.shape == (3, 2) and np.isfinite(A).all()
    assert res["accuracy_matrix"][:2] == state["rows"]  # the rows the 2 processes scored are kept


def test_fsdp_where_accelerate_does_not_set_it_up_is_refused(tmp_path, tiny_llava_dir):
    """On CPU processes accelerate ignores the FSDP config and would train unsharded copies."""
    proc = launch(CONFIGS / "fsdp.yaml", ["-m", "retain", "run", str(two_task_config(tmp_path, tiny_llava_dir))])
    assert proc.returncode != 0 and "retain: error: The launch asks for FSDP but accelerate set up MULTI_CPU" in proc.stderr
    assert not (tmp_path / "runs" / "tiny" / "lora_ft" / "state.json").exists()


def test_processes_that_would_each_train_alone_are_refused(tmp_path, tiny_llava_dir):
    """Without ACCELERATE_USE_CPU on a machine without GPUs, each launched process is its own run."""
    if torch.cuda.is_available():
        pytest.skip("this machine has GPUs")
    proc = launch(CONFIGS / "ddp.yaml", ["-m", "retain", "run", str(two_task_config(tmp_path, tiny_llava_dir))],
                  env={"ACCELERATE_USE_CPU": "false"})
    assert proc.returncode != 0 and "retain: error: 2 processes were launched but accelerate set each up alone" in proc.stderr
