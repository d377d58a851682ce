"""EMT throughput on mini-LLaVA for each scoring mode, and the likelihood/generation ratio.

The same 200 test images of each of three datasets (Fashion-MNIST, 10 classes; easy-VQA
shapes, 3; Animal-MNIST, multi-token animal names) are scored four ways, task by task,
the modes side by side in one process:

- `likelihood`: the class names ranked by log-probability, the prompt run once per image
  (its shared system turn once per call) and every class name in one forward over its
  cache as a prefix tree (retain's way);
- `likelihood, cache per option`: the same scores the way retain computed them before (the
  whole prompt run for every batch, the LM head over all its positions, its cache repeated
  once per class name, the names in one padded batch): its accuracy is the reference the
  tree must match;
- `rule`: greedy generation and the rule matcher;
- `judge`: generation and one chat request per answer to an OpenAI-compatible server on
  loopback that answers at once, so the figure is retain's own cost of judging, not a
  hosted model's latency (its response cache is empty).

Every mode's share of the machine's float32 matmul peak (bench/peak.py, measured in this
process before and after) is its counted FLOPs per image (torch's counter over one batch)
times its images per second, over the peak. Results go to bench/results/emt_modes.json.

    .venv/bin/python bench/emt_modes.py
"""

from __future__ import annotations

import contextlib
import json
import platform
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import torch

from peak import count_flops, machine_peak
from retain.data import load_task
from retain.eval.emt import evaluate_emt
from retain.eval.judge import LLMJudge
from retain.llm import ChatClient
from retain.registry import load_mllm
from retain.stats import mcnemar, percentile_interval, resample_means

OUT = Path(__file__).parent / "results"
N = 200
TASKS = ("fashion-mnist", "easyvqa-shape", "animal-mnist")
MODES = ("likelihood", "likelihood, cache per option", "rule", "judge")


class YesServer(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        body = json.dumps({"choices": [{"message": {"role": "assistant", "content": "yes"}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body)


@contextlib.contextmanager
def cache_per_option(mllm):
    """retain's earlier option scoring: no prefix tree, the LM head over every prompt position, the whole
    prompt run for every batch."""
    mllm._tree_attention, mllm._keeps_logits = (lambda: False), (lambda: False)
    mllm._shared_prefix = lambda enc, prefix: None
    try:
        yield
    finally:
        del mllm._tree_attention, mllm._keeps_logits, mllm._shared_prefix


def run_mode(mllm, task, mode: str, judge, limit: int):
    scoring = "likelihood" if mode.startswith("likelihood") else mode
    with cache_per_option(mllm) if mode == "likelihood, cache per option" else contextlib.nullcontext():
        return evaluate_emt(mllm, task, scoring, limit=limit, judge=judge if mode == "judge" else None)


def main() -> None:
    mllm = load_mllm("mini-llava")
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), YesServer)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    peak_before = machine_peak()
    res = {"model": "mini-llava", "items_per_task": N, "tasks": list(TASKS), "torch": torch.__version__,
           "threads": torch.get_num_threads(), "machine": platform.machine(), "batch_size": 8,
           "modes": {m: {"per_task": {}} for m in MODES}}
    with tempfile.TemporaryDirectory() as cache:
        judge = LLMJudge(ChatClient(f"http://127.0.0.1:{httpd.server_address[1]}/v1", "loopback-yes",
                                    api_key_env="RETAIN_BENCH_UNSET_API_KEY", cache_dir=cache))
        for name in TASKS:
            task = load_task(name)
            for mode in MODES:
                if mode != "judge":  # judging adds no model work: generation's count (the judge's cache stays empty)
                    flops = count_flops(lambda: run_mode(mllm, task, mode, judge, 8)) / 8
                t = time.perf_counter()
                r = run_mode(mllm, task, mode, judge, N)
                dt = time.perf_counter() - t
                correct = [int(rec["outcome"] == "correct") for rec in r.records] if hasattr(r, "records") else None
                res["modes"][mode]["per_task"][name] = {
                    "seconds": round(dt, 2), "images_per_s": round(N / dt, 3), "accuracy": r.accuracy,
                    "flops_per_image": flops, **({"accuracy_norm_token": r.accuracy_norm_token,
                                                  "accuracy_norm_char": r.accuracy_norm_char}
                                                 if mode.startswith("likelihood") else {}),
                    "predictions": [int(rec["predicted"]) if rec["predicted"] is not None else None
                                    for rec in r.records] if hasattr(r, "records") else None,
                    "correct": correct,
                    **({f"correct_norm_{how}": [int(rec[f"predicted_norm_{how}"] == rec["label"]) for rec in r.records]
                        for how in ("token", "char")} if mode.startswith("likelihood") else {})}
                print(name, mode, f"{N / dt:.2f} images/s, accuracy {r.accuracy}", flush=True)
    httpd.shutdown()
    peak_after = machine_peak()
    peak = max(peak_before["float32"], peak_after["float32"])
    res["peak"] = {"float32_before": peak_before["float32"], "float32_after": peak_after["float32"],
                   "bfloat16": peak_before["bfloat16"], "threads": peak_before["threads"]}
    for mode, m in res["modes"].items():
        seconds = sum(v["seconds"] for v in m["per_task"].values())
        m["images_per_s"] = round(N * len(TASKS) / seconds, 3)
        flops = sum(v["flops_per_image"] * N for v in m["per_task"].values())
        m["share_of_peak"] = flops / seconds / peak
    m = res["modes"]
    res["likelihood_over_generation_speed"] = round(m["likelihood"]["images_per_s"] / m["rule"]["images_per_s"], 3)
    res["likelihood_over_cache_per_option_speed"] = round(
        m["likelihood"]["images_per_s"] / m["likelihood, cache per option"]["images_per_s"], 3)
    # every accuracy with its 95% interval (bootstrap over the images); the tree against the earlier
    # computation paired over the images: same predictions, the accuracy difference's interval, McNemar
    for mode in MODES[:3]:
        for name, v in m[mode]["per_task"].items():
            for key in ("", "_norm_token", "_norm_char"):
                if f"correct{key}" in v:
                    v[f"accuracy{key}_interval"] = percentile_interval(
                        resample_means({name: v[f"correct{key}"]})[name][:, 0])
    res["tree_vs_cache_per_option"] = {}
    for name in TASKS:
        a, b = m["likelihood"]["per_task"][name], m["likelihood, cache per option"]["per_task"][name]
        draws = resample_means({name: [a["correct"], b["correct"]]})[name]
        res["tree_vs_cache_per_option"][name] = {
            "same_prediction": int(sum(x == y for x, y in zip(a["predictions"], b["predictions"]))),
            "accuracy_difference": a["accuracy"] - b["accuracy"],
            "difference_interval": percentile_interval(draws[:, 0] - draws[:, 1]),
            "mcnemar": mcnemar(a["correct"], b["correct"])}
    OUT.mkdir(exist_ok=True)
    (OUT / "emt_modes.json").write_text(json.dumps(res, indent=2) + "\n")
    print(f"likelihood is {res['likelihood_over_generation_speed']}x the speed of generation, "
          f"{res['likelihood_over_cache_per_option_speed']}x the cache-per-option scoring")


if __name__ == "__main__":
    main()
