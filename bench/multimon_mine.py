"""MultiMon on retain's offline default, three parts, results in bench/results/multimon_mine.json
(bench/run_all.py --summary writes docs/multimon.md from it):

- full: `retain mine` over a 200,000-sentence generated corpus with mini-CLIP's text tower
  and MiniLM, embeddings not cached (a fresh cache with mini-CLIP and the datasets linked
  in): wall time, the search's pairs per second, peak memory;
- preset: `retain mine configs/multimon.yaml mllm=mini-llava` (60,000 sentences): the
  failure types, their success rates and transfer to the zero-shot classifier and to
  mini-LLaVA, with examples;
- recall: the search against brute force on a 5,000-sentence subset;
- floor: what the full run's arithmetic costs on this machine: the FLOPs of embedding the
  200,000 sentences (torch's counter over a 2,000-sentence sample, scaled by token count)
  and of the search (two FLOPs per pair and dimension of the target's cosines), each over
  the float32 matmul peak (bench/peak.py) measured in this process; and int8 dynamic
  quantisation of MiniLM's linear layers, the one faster arithmetic this CPU has (no bf16
  instructions): its speed against float32 and its largest cosine error, side by side on
  4,096 sentences.

The full run's share of peak is each phase's FLOPs (from `floor`) over its seconds and the peak.

    .venv/bin/python bench/multimon_mine.py [full] [preset] [recall] [floor]   # default: all four
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from timed import timed_retain

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "results" / "multimon_mine.json"
SIZE = 200_000
SUBSET = 5_000


def fresh_cache() -> Path:
    """A cache with the converted datasets and mini-CLIP linked in, and no embeddings."""
    from retain.registry import zoo_folder

    clip = zoo_folder("mini-clip", build=False)
    cache = clip.parents[1]
    tmp = Path(tempfile.mkdtemp(prefix="retain-mine-"))
    (tmp / "zoo").mkdir()
    (tmp / "data").symlink_to(cache / "data")
    (tmp / "zoo" / clip.name).symlink_to(clip)
    return tmp


def full_run() -> dict:
    from retain.registry import zoo_folder

    zoo_folder("mini-clip")
    cache = fresh_cache()
    out = Path(tempfile.mkdtemp(prefix="retain-mine-out-"))
    args = ["--quiet", "mine", "configs/multimon.yaml", f"corpus_size={SIZE}", f"output_dir={out}", "name=bench"]
    from peak import machine_peak

    before = machine_peak()["float32"]
    try:
        rc, cost, proc = timed_retain(args, {"RETAIN_CACHE": str(cache)})
        if rc != 0:
            raise SystemExit(f"retain mine failed:\n{proc.stderr[-3000:]}")
        res = json.loads((out / "bench" / "results.json").read_text())
    finally:
        shutil.rmtree(cache, ignore_errors=True)
        shutil.rmtree(out, ignore_errors=True)
    m = res["mining"]
    cost["peak_float32"] = [before, machine_peak()["float32"]]  # this process, just before and after the run
    return {"command": "retain mine " + " ".join(args[2:4]), **cost, "sentences": res["corpus"]["sentences"],
            "load_s": res["timings"]["corpus_and_models_seconds"], "embedding_s": res["timings"]["embedding_seconds"],
            "shared_layers": res["embeddings"]["shared_layers"],
            "search_s": m["search_seconds"], "pairs_compared": m["pairs_compared"],
            "pairs_per_second": m["pairs_per_second"], "candidates": m["candidates"], "agreements": m["agreements"],
            "failure_types": [[t["name"], t["mined"], t["generated"], t["success_rate"], t["zero_shot_transfer"]]
                              for t in res["failure_types"]], "total_s_in_results": res["timings"]["total_seconds"]}


def preset() -> dict:
    out = Path(tempfile.mkdtemp(prefix="retain-mine-preset-"))
    args = ["--quiet", "mine", "configs/multimon.yaml", "mllm=mini-llava", f"output_dir={out}", "name=preset"]
    try:
        rc, cost, proc = timed_retain(args)
        if rc != 0:
            raise SystemExit(f"retain mine failed:\n{proc.stderr[-3000:]}")
        res = json.loads((out / "preset" / "results.json").read_text())
        generated = [json.loads(line) for line in (out / "preset" / "generated.jsonl").read_text().splitlines()]
    finally:
        shutil.rmtree(out, ignore_errors=True)
    transfer = [g for g in generated if g.get("zero_shot") or g.get("mllm")][:12]
    return {"command": "retain mine " + " ".join(args[2:4]), **cost, "results": res,
            "transfer_examples": [{k: g.get(k) for k in ("type", "a", "b", "cos_target", "zero_shot", "mllm")}
                                  for g in transfer]}


def recall() -> dict:
    """The miner (top_k=None) against every pair of the full matrices, in float64."""
    from retain.multimon.corpus import generated_captions
    from retain.multimon.encoders import cached_pair_embeddings, reference_encoder, target_encoder
    from retain.multimon.miner import erroneous_agreements

    sentences = generated_captions(SIZE, 0)[:SUBSET]
    target, _ = target_encoder("mini-clip")
    t, r, _ = cached_pair_embeddings(target, reference_encoder("minilm"), sentences)
    st, sr = t.double().numpy() @ t.double().numpy().T, r.double().numpy() @ r.double().numpy().T
    i, j = np.triu_indices(len(sentences), k=1)
    out = {"sentences": SUBSET}
    for threshold, gap in ((0.9, 0.2), (0.7, 0.1)):  # the paper's setting, and a loose one with many more pairs
        start = time.perf_counter()
        got = erroneous_agreements(t, r, threshold, gap, top_k=None, progress=False)
        seconds = time.perf_counter() - start
        ok = (st[i, j] > threshold) & (np.abs(st[i, j] - sr[i, j]) > gap)
        truth = set(zip(i[ok].tolist(), j[ok].tolist()))
        found = set(zip(got.i.tolist(), got.j.tolist()))
        out[f"{threshold}/{gap}"] = {"brute_force_pairs": len(truth), "found": len(found),
                                     "recall": len(truth & found) / max(len(truth), 1),
                                     "precision": len(truth & found) / max(len(found), 1), "search_s": round(seconds, 3)}
    return out


def floor() -> dict:
    """FLOPs of the full run's two phases, the time they need at this machine's peak, and int8's trade."""
    import copy
    import warnings

    import torch

    from peak import count_flops, machine_peak
    from retain.multimon.corpus import generated_captions
    from retain.models.dual_encoder import mean_pool
    from retain.multimon.encoders import embed_both, reference_encoder, shared_layers, target_encoder, tokenize

    peak = machine_peak()
    sentences = generated_captions(SIZE, 0)
    target, _ = target_encoder("mini-clip")
    reference = reference_encoder("minilm")
    shared = shared_layers(target, reference)
    tokens = sum(map(len, tokenize(target.tokenizer, sentences, target.max_length)))
    sample = sentences[::SIZE // 2000]
    sample_tokens = sum(map(len, tokenize(target.tokenizer, sample, target.max_length)))
    embed_flops = count_flops(lambda: embed_both(target, reference, sample, shared)) * tokens / sample_tokens
    dim = target.encode(sentences[:2]).shape[1]
    search_flops = SIZE * (SIZE - 1) / 2 * 2 * dim
    out = {"sentences": SIZE, "tokens": tokens, "shared_layers": shared, "embedding_flops": embed_flops,
           "search_flops": search_flops, "target_dim": dim, "peak_float32": peak["float32"],
           "peak_bfloat16": peak["bfloat16"], "threads": peak["threads"],
           "embedding_floor_s": embed_flops / peak["float32"], "search_floor_s": search_flops / peak["float32"]}
    # int8 dynamic quantisation of MiniLM against float32 on the same 4,096 sentences, alternating
    probe = sorted(sentences[:4096], key=len)
    tower = reference.tower
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantised = torch.ao.quantization.quantize_dynamic(copy.deepcopy(tower), {torch.nn.Linear}, dtype=torch.qint8)
    batches = [{k: v for k, v in reference.tokenizer(probe[s:s + 256], padding=True, return_tensors="pt").items()
                if k in ("input_ids", "attention_mask")} for s in range(0, 4096, 256)]

    @torch.inference_mode()
    def embed(model):
        return torch.cat([torch.nn.functional.normalize(mean_pool(model(**b).last_hidden_state, b["attention_mask"]),
                                                        dim=-1) for b in batches])

    seconds, embs = {"float32": [], "int8": []}, {}
    for _ in range(2):
        for name, model in (("float32", tower), ("int8", quantised)):
            t = time.perf_counter()
            embs[name] = embed(model)
            seconds[name].append(time.perf_counter() - t)
    exact, approx = embs["float32"], embs["int8"]
    error = (approx @ approx.T - exact @ exact.T).abs()
    out["int8"] = {"sentences": 4096, "float32_s": min(seconds["float32"]), "int8_s": min(seconds["int8"]),
                   "speedup": min(seconds["float32"]) / min(seconds["int8"]), "max_cosine_error": float(error.max()),
                   "median_cosine_error": float(error.median())}
    return out


def main() -> None:
    res = json.loads(OUT.read_text()) if OUT.exists() else {}
    parts = [a for a in sys.argv[1:] if a in ("full", "preset", "recall", "floor")] or ["full", "preset", "recall",
                                                                                      "floor"]
    for part in parts:
        res[part] = {"full": full_run, "preset": preset, "recall": recall, "floor": floor}[part]()
        print(part, json.dumps({k: v for k, v in res[part].items() if k != "results"}, indent=1), flush=True)
        OUT.write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()
