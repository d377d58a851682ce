"""MultiMon's miner at scale: `retain mine` over a 200,000-sentence generated corpus with
mini-CLIP's text tower and MiniLM on this machine, embeddings not cached (a fresh
embedding cache; mini-CLIP and the datasets linked in), then the search's recall against
brute force on a 5,000-sentence subset. Results: bench/results/multimon_mine.json.

    .venv/bin/python bench/multimon_mine.py            # both parts
    .venv/bin/python bench/multimon_mine.py --recall   # only the recall check
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
    from retain import zoo

    cache = Path(zoo.model_dir("mini-clip")).parents[1]
    tmp = Path(tempfile.mkdtemp(prefix="retain-mine-"))
    (tmp / "zoo").mkdir()
    (tmp / "data").symlink_to(cache / "data")
    (tmp / "zoo" / zoo.model_dir("mini-clip").name).symlink_to(zoo.model_dir("mini-clip"))
    return tmp


def full_run() -> dict:
    from retain import zoo

    zoo.ensure("mini-clip")
    cache = fresh_cache()
    out = Path(tempfile.mkdtemp(prefix="retain-mine-out-"))
    args = ["--quiet", "mine", "configs/multimon.yaml", f"corpus_size={SIZE}", f"output_dir={out}", "name=bench"]
    try:
        rc, cost, proc = timed_retain(args, {"RETAIN_CACHE": str(cache)})
        if rc != 0:
            raise SystemExit(f"retain mine failed:\n{proc.stderr[-3000:]}")
        res = json.loads((out / "bench" / "results.json").read_text())
    finally:
        shutil.rmtree(cache, ignore_errors=True)
        shutil.rmtree(out, ignore_errors=True)
    m = res["mining"]
    return {"command": "retain mine " + " ".join(args[2:4]), **cost, "sentences": res["corpus"]["sentences"],
            "embedding_s": res["timings"]["embedding_seconds"], "shared_layers": res["embeddings"]["shared_layers"],
            "search_s": m["search_seconds"], "pairs_compared": m["pairs_compared"],
            "pairs_per_second": m["pairs_per_second"], "candidates": m["candidates"], "agreements": m["agreements"],
            "failure_types": [[t["name"], t["mined"], t["generated"], t["success_rate"], t["zero_shot_transfer"]]
                              for t in res["failure_types"]], "total_s_in_results": res["timings"]["total_seconds"]}


def recall() -> dict:
    """The miner (top_k=None) against every pair of the full matrices, in float64."""
    from retain.multimon.corpus import generated_captions
    from retain.multimon.encoders import cached_pair_embeddings, reference_encoder, target_encoder
    from retain.multimon.miner import erroneous_agreements

    sentences = generated_captions(SIZE, 0)[:SUBSET]
    target, _ = target_encoder("mini-clip")
    t, r, _ = cached_pair_embeddings(target, reference_encoder("minilm"), sentences)
    start = time.perf_counter()
    got = erroneous_agreements(t, r, 0.9, 0.2, top_k=None, progress=False)
    seconds = time.perf_counter() - start
    st, sr = t.double().numpy() @ t.double().numpy().T, r.double().numpy() @ r.double().numpy().T
    i, j = np.triu_indices(len(sentences), k=1)
    ok = (st[i, j] > 0.9) & (np.abs(st[i, j] - sr[i, j]) > 0.2)
    truth = set(zip(i[ok].tolist(), j[ok].tolist()))
    found = set(zip(got.i.tolist(), got.j.tolist()))
    return {"sentences": SUBSET, "brute_force_pairs": len(truth), "found": len(found),
            "recall": len(truth & found) / max(len(truth), 1), "precision": len(truth & found) / max(len(found), 1),
            "search_s": round(seconds, 3)}


def main() -> None:
    res = json.loads(OUT.read_text()) if OUT.exists() else {}
    if "--recall" not in sys.argv:
        res["full"] = full_run()
        print(json.dumps(res["full"], indent=1), flush=True)
    res["recall"] = recall()
    print(json.dumps(res["recall"], indent=1))
    OUT.write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()
