"""LoRA-FT training throughput: retain's trainer against a plain transformers + PEFT loop.

Both arms fine-tune mini-LLaVA with the same LoRA (r 16 on the LLM's attention and MLP
projections, projector trainable), AdamW at the same learning rate, on the same
vqa-shapes training items in the same order, batch 16, for STEPS steps after WARMUP
untimed ones. The plain arm builds its batches with the processor and masks the prompt
tokens itself; retain's arm is `retain.engine.optimise` with `lora_ft`, as `retain run`
uses it. Each arm runs in its own process (so peak memory is its own), alternating,
REPEATS times. Tokens/s counts the non-padding tokens of every timed batch (image tokens
included). Each arm also measures the machine's matmul peak in its own process
(bench/peak.py) and counts the FLOPs of one training step (forward and backward on the first
timed batch, torch's FLOP counter) after its timed steps: its share of peak is the counted
FLOPs per token times the timed tokens per second, over the float32 peak. Results:
bench/results/mcit_throughput.json.

    .venv/bin/python bench/mcit_throughput.py
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
from pathlib import Path

from peak import count_flops, machine_peak

OUT = Path(__file__).parent / "results"
STEPS, WARMUP, BATCH, REPEATS, LR = 12, 2, 16, 2, 2e-4


def items():
    from retain.data.instruct import load_instruction_task

    s = load_instruction_task("vqa-shapes").split("train")
    n = (STEPS + WARMUP) * BATCH
    return s.images[:n], s.questions[:n], s.answers[:n]


def plain() -> dict:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from retain.models.mllm import LM_TARGETS, to_pil
    from retain.registry import zoo_folder

    torch.manual_seed(0)
    path = str(zoo_folder("mini-llava"))
    processor = AutoProcessor.from_pretrained(path)
    model = AutoModelForImageTextToText.from_pretrained(path, use_safetensors=True)
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, target_modules=LM_TARGETS))
    for n, p in model.named_parameters():
        p.requires_grad_("lora_" in n or "multi_modal_projector" in n)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=LR, weight_decay=0.0)
    tok = processor.tokenizer
    tok.padding_side = "right"
    images, questions, answers = items()
    model.train()

    def one(step: int):
        sl = slice(step * BATCH, (step + 1) * BATCH)
        prompts = [tok.apply_chat_template([{"role": "user", "content": f"<image>\n{q}"}], tokenize=False,
                                           add_generation_prompt=True) for q in questions[sl]]
        full = [p + a + tok.eos_token for p, a in zip(prompts, answers[sl])]
        pil = [to_pil(i) for i in images[sl]]
        enc = processor(text=full, images=pil, return_tensors="pt", padding=True)
        prompt_lens = processor(text=prompts, images=pil, return_tensors="pt", padding=True)["attention_mask"].sum(1)
        labels = enc["input_ids"].clone()
        labels[enc["attention_mask"] == 0] = -100
        for k, n in enumerate(prompt_lens.tolist()):
            labels[k, :n] = -100
        loss = model(**enc, labels=labels).loss
        loss.backward()
        return int(enc["attention_mask"].sum())

    tokens, start = 0, None
    for step in range(STEPS + WARMUP):
        if step == WARMUP:
            start = time.perf_counter()
        n = one(step)
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if step >= WARMUP:
            tokens += n
    seconds = time.perf_counter() - start
    counted = {}
    flops = count_flops(lambda: counted.setdefault("tokens", one(WARMUP)))
    opt.zero_grad(set_to_none=True)
    return {"seconds": seconds, "tokens": tokens, "flops_per_token": flops / counted["tokens"]}


def retain_arm() -> dict:
    import torch
    from accelerate import Accelerator

    from retain.config import RunConfig, TrainConfig
    from retain.data.instruct import InstructionSplit, InstructionTask
    from retain.methods import create_method
    from retain.methods.base import TaskContext
    from retain.registry import load_mllm
    from retain.rundir import RunDir
    from retain.engine import optimise
    from retain.families.mllm import batch_loss, collate_items as _collate

    torch.manual_seed(0)
    mllm = load_mllm("mini-llava")
    method = create_method("lora_ft", family="mllm")
    method.setup(mllm)
    images, questions, answers = items()
    split = InstructionSplit(list(images), list(questions), list(answers))
    task = InstructionTask("vqa-shapes", {"train": split}, "vqa")
    cfg = RunConfig(train=TrainConfig(lr=LR, weight_decay=0.0, batch_size=BATCH, warmup_steps=0, epochs=1))
    ctx = TaskContext(task=task, index=0, train=split, model=mllm, tasks=[task], train_splits=[split],
                      device=torch.device("cpu"), seed=0, batch_size=BATCH)
    accelerator = Accelerator()
    wrapped = accelerator.prepare(mllm.model)
    clock = {"tokens": 0, "step": 0, "start": None}

    def timed(batch):
        if clock["step"] == WARMUP:
            clock["start"] = time.perf_counter()
        loss = batch_loss(mllm, wrapped, method, batch, ctx)
        clock["step"] += 1
        return loss

    build = mllm.training_batch

    def counting(*args):  # count the tokens of timed batches, as the plain arm does
        enc = build(*args)
        if clock["step"] >= WARMUP:
            clock["tokens"] += int(enc["attention_mask"].sum())
        return enc

    mllm.training_batch = counting
    optimise(accelerator, wrapped, method, ctx, cfg, RunDir("/tmp/retain-bench-unused"), _collate(split, task.name),
             timed)
    seconds = time.perf_counter() - clock["start"]
    mllm.training_batch = build
    first = _collate(split, task.name)(range(WARMUP * BATCH, (WARMUP + 1) * BATCH))
    n = int(build(first["images"], first["questions"], first["answers"])["attention_mask"].sum())
    wrapped.train()
    flops = count_flops(lambda: batch_loss(mllm, wrapped, method, first, ctx).backward())
    return {"seconds": seconds, "tokens": clock["tokens"], "flops_per_token": flops / n}


def child(arm: str) -> None:
    peak = machine_peak()
    res = plain() if arm == "plain" else retain_arm()
    res["peak_flops"] = max(peak["float32"], machine_peak()["float32"])  # before and after: the better
    res["share_of_peak"] = res["flops_per_token"] * res["tokens"] / res["seconds"] / res["peak_flops"]
    res["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("RESULT " + json.dumps(res))


def main() -> None:
    import torch

    runs = {"plain": [], "retain": []}
    for _ in range(REPEATS):
        for arm in ("plain", "retain"):
            out = subprocess.run([sys.executable, __file__, arm], capture_output=True, text=True, check=True,
                                 env={**__import__("os").environ, "RETAIN_QUIET": "1"})
            res = json.loads(next(line for line in out.stdout.splitlines() if line.startswith("RESULT "))[7:])
            res["tokens_per_s"] = res["tokens"] / res["seconds"]
            runs[arm].append(res)
            print(arm, json.dumps(res))
    best = {arm: max(r["tokens_per_s"] for r in rs) for arm, rs in runs.items()}
    summary = {"steps": STEPS, "warmup_steps": WARMUP, "batch": BATCH, "repeats": REPEATS, "torch": torch.__version__,
               "threads": torch.get_num_threads(), "runs": runs, "best_tokens_per_s": best,
               "peak_rss_mb": {arm: max(r["peak_rss_mb"] for r in rs) for arm, rs in runs.items()},
               "retain_over_plain": best["retain"] / best["plain"],
               "share_of_peak": {arm: max(r["share_of_peak"] for r in rs) for arm, rs in runs.items()},
               "peak_gflops": max(r["peak_flops"] for rs in runs.values() for r in rs) / 1e9}
    OUT.mkdir(exist_ok=True)
    (OUT / "mcit_throughput.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"retain / plain tokens/s: {summary['retain_over_plain']:.3f}")


if __name__ == "__main__":
    child(sys.argv[1]) if len(sys.argv) > 1 else main()
