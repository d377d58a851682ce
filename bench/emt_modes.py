"""EMT throughput on mini-LLaVA for each scoring mode, and the likelihood/generation ratio.

The same test images of Fashion-MNIST (10 classes) and easy-VQA shapes (3 classes) are
scored three ways: `rule` (greedy generation + the rule matcher), `likelihood` (ranking the
class names, prompt computed once per image) and `judge` (generation + one chat request per
answer to an OpenAI-compatible server on loopback that answers at once, so the figure is
retain's own cost of judging, not a hosted model's latency; its response cache is empty).
Results go to bench/results/emt_modes.json.

    .venv/bin/python bench/emt_modes.py
"""

from __future__ import annotations

import json
import platform
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import torch

from retain.data import load_task
from retain.eval.emt import evaluate_emt
from retain.eval.judge import LLMJudge
from retain.llm import ChatClient
from retain.registry import load_mllm

OUT = Path(__file__).parent / "results"
N = 100
TASKS = ("fashion-mnist", "easyvqa-shape")


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


def main() -> None:
    mllm = load_mllm("mini-llava")
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), YesServer)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    res = {"model": "mini-llava", "items_per_task": N, "tasks": list(TASKS), "torch": torch.__version__,
           "threads": torch.get_num_threads(), "machine": platform.machine(), "modes": {}}
    with tempfile.TemporaryDirectory() as cache:
        judge = LLMJudge(ChatClient(f"http://127.0.0.1:{httpd.server_address[1]}/v1", "loopback-yes",
                                    api_key_env="RETAIN_BENCH_NO_KEY", cache_dir=cache))
        for mode in ("likelihood", "rule", "judge"):
            per_task, total, seconds = {}, 0, 0.0
            for name in TASKS:
                task = load_task(name)
                t = time.perf_counter()
                r = evaluate_emt(mllm, task, mode, limit=N, judge=judge if mode == "judge" else None)
                dt = time.perf_counter() - t
                per_task[name] = {"seconds": round(dt, 2), "images_per_s": round(N / dt, 2), "accuracy": r.accuracy}
                total, seconds = total + N, seconds + dt
            res["modes"][mode] = {"images_per_s": round(total / seconds, 2), "per_task": per_task}
            print(mode, json.dumps(res["modes"][mode]))
    httpd.shutdown()
    m = res["modes"]
    res["likelihood_over_generation_speed"] = round(m["likelihood"]["images_per_s"] / m["rule"]["images_per_s"], 2)
    OUT.mkdir(exist_ok=True)
    (OUT / "emt_modes.json").write_text(json.dumps(res, indent=2) + "\n")
    print(f"likelihood is {res['likelihood_over_generation_speed']}x the speed of generation")


if __name__ == "__main__":
    main()
