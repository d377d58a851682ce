"""`retain mine` end to end on a tiny random CLIP (target) and MiniLM (reference)."""

import json

import numpy as np
import pytest
import torch

from retain.cli import main
from retain.config import load_config
from retain.errors import RetainError
from retain.llm import LMError
from retain.multimon.backends import FailureType, OfflineBackend
from retain.multimon.encoders import reference_encoder, target_encoder
from retain.multimon.evaluate import ImageBank, grounds_apart, mllm_transfer, probe_captions, zero_shot_transfer
from retain.multimon.lexical import ground
from retain.multimon.pipeline import MineConfig, drop_keywords, load_corpus, run_mine, steer

SENTENCES = ["a red circle.", "a blue circle.", "a red triangle.", "a green rectangle on the left.",
             "a green rectangle on the right.", "two dogs chasing a cat.", "a cat chasing two dogs.",
             "there is no yellow triangle.", "a yellow triangle.", "a dog sleeping at night.",
             "a dog sleeping in the morning.", "all of the circles are red.", "some of the circles are red.",
             "a small black sneaker.", "a large black sneaker.", "a bag next to a dress.", "a dress next to a bag.",
             "three gray circles at the top.", "four gray circles at the top.", "a teal triangle above a brown circle.",
             "a photo of a zebra.", "a photo of a horse.", "the number 7.", "the number 1.", "A red circle!"]


@pytest.fixture(scope="module")
def corpus_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("corpus") / "sentences.txt"
    path.write_text("\n".join(SENTENCES) + "\n\n")
    return path


def cfg(tmp_path, clip, corpus, **kw) -> MineConfig:
    base = dict(name="mm", output_dir=str(tmp_path), target=str(clip), corpus=str(corpus), threshold=0.5, gap=0.05,
                top_k=20, pairs_per_type=4, images_per_side=3, batch_size=8)
    return MineConfig(**{**base, **kw})


def test_keyword_filter():
    kept, dropped = drop_keywords(["There is no dog.", "a dog", "I am unable to see"], ["there is no", "unable"])
    assert kept == ["a dog"] and dropped == 2


def test_offline_pipeline_end_to_end(tmp_path, tiny_clip_dir, corpus_file):
    out = run_mine(cfg(tmp_path, tiny_clip_dir, corpus_file))
    res = json.loads((out / "results.json").read_text())
    # "A red circle!" is a duplicate of "a red circle."; "there is no ..." is the paper's filtered keyword.
    assert res["corpus"]["sentences"] == len(SENTENCES) - 2 and res["corpus"]["dropped_by_keyword"] == 1
    mined = [json.loads(line) for line in (out / "mined.jsonl").read_text().splitlines()]
    assert 0 < len(mined) <= 20 and res["mined"] == len(mined)
    # Each kept pair really is an erroneous agreement of these encoders.
    target, _ = target_encoder(str(tiny_clip_dir))
    reference = reference_encoder("minilm")
    for row in mined[:5]:
        t, r = target.encode([row["a"], row["b"]]), reference.encode([row["a"], row["b"]])
        assert float(t[0] @ t[1]) == pytest.approx(row["cos_target"], abs=1e-4)
        assert float(r[0] @ r[1]) == pytest.approx(row["cos_reference"], abs=1e-4)
        assert row["cos_target"] > 0.5 and abs(row["cos_target"] - row["cos_reference"]) > 0.05
    assert [m["cos_target"] for m in mined] == sorted((m["cos_target"] for m in mined), reverse=True)
    types = res["failure_types"]
    assert types and sum(t["mined"] for t in types) == len(mined)
    generated = [json.loads(line) for line in (out / "generated.jsonl").read_text().splitlines()]
    assert generated and res["generated"] == len(generated)
    for t in types:
        mine = [g for g in generated if g["type"] == t["name"] and g["set"] == "generated"]
        assert t["generated"] == len(mine) <= 4
        if mine:  # success rate = the fraction of the type's pairs the target conflates
            assert t["success_rate"] == pytest.approx(np.mean([g["cos_target"] > 0.5 for g in mine]), abs=1e-4)
    for g in generated:  # transfer is measured exactly on the pairs whose two sides have images
        assert (g["zero_shot"] is not None) == grounds_apart(g["a"], g["b"])
        assert g["set"] == "generated" or grounds_apart(g["a"], g["b"])
    table = (out / "table.md").read_text()
    assert "| failure type |" in table and types[0]["name"] in table
    html = (out / "report.html").read_text()
    assert "MultiMon" in html and "Resolved config" in html and "seed" in (out / "config.yaml").read_text()
    assert res["embeddings"]["target"] is False and res["embeddings"]["reference"] is False
    # A second run over the same corpus reads both embeddings back and gives the same results.
    again = json.loads((run_mine(cfg(tmp_path, tiny_clip_dir, corpus_file, name="mm2")) / "results.json").read_text())
    assert again["embeddings"]["target"] is True and again["embeddings"]["reference"] is True
    assert again["failure_types"] == types
    assert (tmp_path / "mm2" / "generated.jsonl").read_text() == (out / "generated.jsonl").read_text()


def test_chat_backend_failures_are_recorded_not_fatal(tmp_path, tiny_clip_dir, corpus_file, monkeypatch, server):
    monkeypatch.setenv("RETAIN_TEST_API_KEY", "sk-secret-not-in-the-run-dir")
    monkeypatch.setenv("RETAIN_LLM_HOSTS", "127.0.0.1")  # lm_url comes from the config: its host must be allowed
    categories = "1. Colour | Colour words are ignored. | pairs: 1, 2\n2. Order | Word order is ignored. | pairs: 3\n"
    server.script = [("ok", categories), ("status", 500), ("status", 500), ("status", 500), ("status", 500),
                     ("ok", '("a red circle", "a blue circle"),\n("a red triangle", "a green triangle"),')]
    out = run_mine(cfg(tmp_path, tiny_clip_dir, corpus_file, backend="chat", lm_url=server.url, lm_model="lm",
                       lm_key_env="RETAIN_TEST_API_KEY", lm_timeout=2.0))
    res = json.loads((out / "results.json").read_text())
    assert [t["name"] for t in res["failure_types"]] == ["Colour", "Order"]
    assert "generate:Colour" in res["errors"] and "HTTP 500" in res["errors"]["generate:Colour"]
    order = res["failure_types"][1]
    assert order["generated"] == 2 and order["zero_shot_pairs"] == 2  # both pairs have easy-VQA images
    assert server.requests[0]["auth"] == "Bearer sk-secret-not-in-the-run-dir"
    for f in out.rglob("*"):
        if f.is_file():
            assert "sk-secret-not-in-the-run-dir" not in f.read_text(errors="ignore")


class StubMLLM:
    """Scores each caption by a table: log-likelihood sums and token counts chosen by hand."""

    def __init__(self, sums, lengths):
        self.sums, self.lengths = sums, lengths

    def option_ids(self, options):
        return [[0] * self.lengths[o] for o in options]

    def loglik_many(self, images, question, options):
        return [[self.sums[o] for o in options] for _ in images]


def test_mllm_transfer_uses_per_token_likelihood_and_either_side():
    bank = ImageBank()
    pair = ("a red circle", "a blue circle")
    g = (ground(pair[0]), ground(pair[1]))
    # Summed, b wins (-6 > -8); per token a wins (-8/4 = -2 > -6/2 = -3): images of a are matched, of b not.
    rec = mllm_transfer(StubMLLM({"a red circle": -8.0, "a blue circle": -6.0}, {"a red circle": 4, "a blue circle": 2}),
                        [pair], [g], bank, images_per_side=2)[0]
    assert rec["accuracy_a"] == 1.0 and rec["accuracy_b"] == 0.0 and rec["fails"] is True
    assert mllm_transfer(StubMLLM({}, {}), [pair], [None], bank)[0] is None


class StubDual:
    """Every image embeds as e0; caption A as e0, caption B as e1."""

    def __init__(self, a):
        self.a = a

    def encode_text(self, texts):
        return torch.eye(2)[[0 if t == self.a else 1 for t in texts]]

    def preprocess(self, images):
        return images

    def encode_image(self, images):
        return torch.eye(2)[[0] * len(images)]


def test_zero_shot_transfer_fails_a_pair_when_either_side_is_mismatched():
    bank = ImageBank()
    pair = ("a photo of a red circle.", "a photo of a red triangle.")
    g = (ground(pair[0]), ground(pair[1]))
    rec = zero_shot_transfer(StubDual(pair[0]), [pair], [g], bank, images_per_side=3)[0]
    assert rec == {"accuracy_a": 1.0, "accuracy_b": 0.0, "images": [3, 3], "fails": True}
    assert bank.images(g[1], 3).shape[0] == 3


def test_offline_transfer_pairs_are_rewrites_of_captions_with_images():
    probes = probe_captions()
    assert all(ground(s) is not None for s in probes) and len(probes) > 100
    b = OfflineBackend(["unused"], seed=0)
    for name in ("colour", "object", "number"):
        pairs = b.generate(FailureType(name, ""), 10, seeds=probes, keep=grounds_apart)
        assert len(pairs) == 10 and all(grounds_apart(x, y) and x in probes for x, y in pairs)
    assert b.generate(FailureType("negation", ""), 5, seeds=probes, keep=grounds_apart) == []


def test_cli_mine_and_config_errors(tmp_path, tiny_clip_dir, corpus_file, capsys):
    assert main(["--quiet", "mine", f"target={tiny_clip_dir}", f"corpus={corpus_file}", "threshold=0.5", "gap=0.05",
                 f"output_dir={tmp_path}", "name=cli", "pairs_per_type=2", "images_per_side=2"]) == 0
    assert "| failure type |" in capsys.readouterr().out and (tmp_path / "cli" / "report.html").exists()
    assert main(["report", str(tmp_path / "cli")]) == 0
    assert main(["mine", "backend=gpt"]) == 2 and "'backend' must be one of offline, chat, got 'gpt'" in capsys.readouterr().err
    assert main(["mine", "treshold=0.8"]) == 2 and "threshold" in capsys.readouterr().err
    with pytest.raises(RetainError, match="does not exist"):
        run_mine(cfg(tmp_path, tiny_clip_dir, tmp_path / "missing.txt"))
    with pytest.raises(RetainError, match="backend: chat needs lm_url"):
        run_mine(cfg(tmp_path, tiny_clip_dir, corpus_file, backend="chat"))


def test_shipped_preset_loads():
    c = load_config("configs/multimon.yaml", [], cls=MineConfig)
    assert c.corpus == "generated" and c.corpus_size >= 50000 and c.top_k == 150 and c.pairs_per_type == 41


class StubSteerer:
    def __init__(self, fail_on):
        self.fail_on, self.asked = fail_on, []

    def relevant(self, a, b, steer):
        self.asked.append(a)
        if a == self.fail_on:
            raise LMError("no answer")
        return "circle" in a


def test_steering_asks_in_order_until_top_k_pass_and_records_failures():
    rows = [{"a": s, "b": s + "!"} for s in ["a dog", "a circle 1", "a cat", "a circle 2", "a circle 3", "a circle 4"]]
    errors = {}
    backend = StubSteerer(fail_on="a cat")
    kept = steer(rows, backend, MineConfig(top_k=2, steer="shapes"), errors)
    assert [r["a"] for r in kept] == ["a circle 1", "a circle 2"]
    assert backend.asked == ["a dog", "a circle 1", "a cat", "a circle 2"]  # stops once top_k passed
    assert "1 pair(s) got no answer" in errors["steer"]


def test_offline_steering_keeps_pairs_near_the_steering_text():
    b = OfflineBackend([], reference_encoder("minilm"), steer_threshold=0.3)
    assert b.relevant("a red circle on the left.", "a red circle on the right.", "circles and triangles")
    assert not b.relevant("a sneaker next to a bag.", "a bag next to a sneaker.", "circles and triangles")
    assert b.relevant("a dog chasing a cow.", "a cow chasing a dog.", "animals on a farm")


def test_steered_run_keeps_only_relevant_pairs(tmp_path, tiny_clip_dir, corpus_file):
    out = run_mine(cfg(tmp_path, tiny_clip_dir, corpus_file, name="steered", steer="circles and triangles",
                       steer_threshold=0.3, top_k=5, transfer_pairs=0))
    res = json.loads((out / "results.json").read_text())
    mined = [json.loads(line) for line in (out / "mined.jsonl").read_text().splitlines()]
    judge = OfflineBackend([], reference_encoder("minilm"), steer_threshold=0.3)
    assert res["steer"] == "circles and triangles" and 0 < len(mined) <= 5
    assert all(judge.relevant(m["a"], m["b"], "circles and triangles") for m in mined)
    assert res["mining"]["top_k"] == 50  # the pool asked: steer_pool x top_k


def test_datasets_corpora_snli_and_coco_layouts(tmp_path):
    from datasets import Dataset, DatasetDict

    snli = DatasetDict({"train": Dataset.from_dict({"premise": ["A man rides a horse.", "A man rides a horse.",
                                                                 "Two dogs play."], "label": [0, 1, 2]})})
    snli.save_to_disk(str(tmp_path / "snli"))
    sentences, note = load_corpus(MineConfig(corpus=f"hf:{tmp_path / 'snli'}", corpus_size=0))
    assert sentences == ["A man rides a horse.", "Two dogs play."] and "2 distinct sentences" in note
    coco = Dataset.from_dict({"sentences": [["a cat on a mat.", "A cat on a mat"], ["a red bus."]], "id": [1, 2]})
    coco.save_to_disk(str(tmp_path / "coco"))
    sentences, _ = load_corpus(MineConfig(corpus=f"hf:{tmp_path / 'coco'}", corpus_column="sentences"))
    assert sentences == ["a cat on a mat.", "a red bus."]
    with pytest.raises(RetainError, match="has no column caption"):
        load_corpus(MineConfig(corpus=f"hf:{tmp_path / 'coco'}", corpus_column="caption"))


def test_missing_image_dataset_means_no_transfer_for_its_captions_not_a_crash(monkeypatch):
    import retain.data

    def fail(name):
        raise RetainError(f"{name} is missing: install it")

    monkeypatch.setattr(retain.data, "load_task", fail)
    bank = ImageBank()
    pair = ("a photo of a dress.", "a photo of a coat.")
    assert zero_shot_transfer(StubDual(pair[0]), [pair], [(ground(pair[0]), ground(pair[1]))], bank) == [None]
    assert "fashion-mnist is missing" in bank.unavailable["fashion-mnist"]
