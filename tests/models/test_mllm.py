"""The MLLM interface on a tiny random LLaVA saved to disk with a real chat tokenizer."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from retain.errors import RetainError
from direct import option_logprob
from retain.models.mllm import IGNORE, OptionTree, best_options, normalise
from retain.registry import load_mllm


@pytest.fixture(scope="module")
def mllm(tiny_llava_dir):
    return load_mllm(str(tiny_llava_dir))


@pytest.fixture(scope="module")
def mllm64(tiny_llava_dir):
    """The same model in float64: two computations of one score must agree to rounding
    (~1e-12), which float32 does not give the same way on every x86 CPU."""
    m = load_mllm(str(tiny_llava_dir))
    m.model.to(torch.float64)
    return m


def images(n, seed=0):
    return list(np.random.default_rng(seed).integers(0, 255, (n, 20, 20, 3), dtype=np.uint8))


def test_answer_only_loss_masking(mllm):
    qs, ans = ["What is this?", "Which colour is the big shape here?"], ["a cat", "red"]
    batch = mllm.training_batch(images(2), qs, ans)
    tok = mllm.tokenizer
    for k in range(2):
        labels = batch["labels"][k]
        kept = labels[labels != IGNORE].tolist()
        assert kept == tok(ans[k] + tok.eos_token, add_special_tokens=False)["input_ids"]
        # the kept labels are the last real tokens of the row, right before the padding
        real = int(batch["attention_mask"][k].sum())
        assert batch["input_ids"][k][real - len(kept):real].tolist() == kept
        assert (labels[real:] == IGNORE).all()
    # the loss equals a direct cross-entropy over those positions
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    with torch.no_grad():
        logits = mllm.model(**inputs).logits.float()
        direct = []
        for k in range(2):
            pos = (batch["labels"][k] != IGNORE).nonzero()[:, 0]
            direct += [F.cross_entropy(logits[k, p - 1][None], batch["labels"][k, p][None]) for p in pos]
        expected = torch.stack(direct).mean()
        got = mllm.training_loss(images(2), qs, ans)
    torch.testing.assert_close(got, expected)


def test_loglik_equals_direct_per_option_computation(mllm64):
    mllm = mllm64
    img = images(1)[0]
    # options that share first tokens share tree nodes; one is a prefix of another
    options = ["cat", "golden retriever", "golden eagle", "golden", "a red circle shape", "a red square", "7"]
    shared = mllm.loglik(img, "What is in the image?", options)
    enc = mllm._encode([img], [mllm.chat_prompt("What is in the image?")], "left")
    for opt, score in zip(options, shared):
        assert score == pytest.approx(option_logprob(mllm, enc, opt), abs=1e-9)


def test_batched_loglik_equals_one_image_at_a_time(mllm64):
    mllm = mllm64
    ims = images(5)
    options = ["cat", "golden retriever", "7"]
    batched = mllm.loglik_many(ims, "What is in the image?", options, batch_size=3)  # batches of 3 and 2
    for im, row in zip(ims, batched):
        assert row == pytest.approx(mllm.loglik(im, "What is in the image?", options), abs=1e-9)
    assert len({tuple(round(v, 4) for v in row) for row in batched}) > 1  # the images do differ
    text = mllm.loglik_many([None, None], "What is 2 plus 3?", ["5", "five"])
    alone = mllm.loglik(None, "What is 2 plus 3?", ["5", "five"])
    assert text[0] == pytest.approx(text[1], abs=1e-9) and text[0] == pytest.approx(alone, abs=1e-9)


def test_option_tree_shares_prefixes_and_masks_all_but_ancestors():
    """Options [5 6 7], [5 6 8], [5 9], [4]: the nodes are the proper prefixes 5 and 5-6, each
    (node, next token) is scored once, and a node sees itself and its ancestors only."""
    tree = OptionTree([[5, 6, 7], [5, 6, 8], [5, 9], [4]])
    assert tree.tokens == [5, 6] and tree.depth == [0, 1]
    assert tree.ancestry.tolist() == [[True, False], [True, True]]
    entries = list(zip(tree.score_nodes, tree.score_tokens))
    assert entries == [(0, 6), (1, 7), (1, 8), (0, 9)]
    assert tree.membership.tolist() == [[1, 1, 0, 0], [1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0]]
    siblings = OptionTree([[1, 2, 3], [1, 4, 5]])  # 1-2 and 1-4 are siblings: neither sees the other
    assert siblings.tokens == [1, 2, 4] and siblings.ancestry.tolist() == [[True, False, False], [True, True, False],
                                                                           [True, False, True]]


def test_all_options_run_in_one_forward_without_copying_the_cache(mllm64, monkeypatch):
    """Per batch of images two forwards, whatever the options: the prompt after its shared first tokens
    (the system turn, run once per call as a batch of one), then one row per image holding every tree
    node. The fallbacks (the cache repeated per option, for attention without custom masks; the whole
    prompt per batch) give the same scores."""
    mllm, ims = mllm64, images(5, seed=4)
    options = ["golden retriever", "golden eagle", "a red circle shape", "cat"]
    nodes = len(OptionTree(mllm.option_ids(options)).tokens)
    prompt = mllm._encode(ims[:1], [mllm.chat_prompt("What is in the image?")], "left")["input_ids"][0]
    image_at = prompt.tolist().index(mllm.tokenizer.convert_tokens_to_ids(mllm.image_token))
    calls = []
    forward = mllm.model.forward
    monkeypatch.setattr(mllm.model, "forward", lambda *a, **k: calls.append(tuple(k["input_ids"].shape))
                        or forward(*a, **k))
    tree = mllm.loglik_many(ims, "What is in the image?", options, batch_size=2)
    rest = len(prompt) - image_at
    assert calls == [(1, image_at), (2, rest), (2, nodes), (2, rest), (2, nodes), (1, rest), (1, nodes)]
    assert nodes < sum(len(i) - 1 for i in mllm.option_ids(options))
    monkeypatch.setattr(mllm, "_shared_prefix", lambda enc, prefix: None)
    calls.clear()
    whole = mllm.loglik_many(ims, "What is in the image?", options, batch_size=2)
    assert calls[:2] == [(2, len(prompt)), (2, nodes)]
    monkeypatch.setattr(mllm, "_tree_attention", lambda: False)
    calls.clear()
    repeated = mllm.loglik_many(ims, "What is in the image?", options, batch_size=2)
    assert calls[1][0] == 2 * len(options)
    assert np.asarray(tree) == pytest.approx(np.asarray(whole), abs=1e-9)
    assert np.asarray(tree) == pytest.approx(np.asarray(repeated), abs=1e-9)


def token_logprobs(mllm, enc, option: str) -> list[float]:
    """log p of each of the option's tokens, each from its own full forward of the prompt and the
    option's tokens before it (no cache, no batching), in float64."""
    ids = mllm.tokenizer(option, add_special_tokens=False)["input_ids"]
    out = []
    for k, t in enumerate(ids):
        full = torch.cat([enc["input_ids"], torch.tensor([ids[:k]], dtype=torch.long)], 1)
        with torch.no_grad():
            logits = mllm.model(input_ids=full, attention_mask=torch.ones_like(full),
                                pixel_values=enc["pixel_values"]).logits[0, -1]
        out.append(logits.double().log_softmax(-1)[t].item())
    return out


def test_length_normalised_scores_against_token_by_token_forwards(mllm64):
    """Sum, mean per token and mean per character (lm-eval's acc_norm) of each option's
    log-probabilities against a token-by-token computation; on these options the sum picks the
    short one, the per-token mean a longer one, the per-character mean the longest."""
    mllm = mllm64
    img, question = images(1)[0], "What is in the image?"
    options = ["dog", "blue square", "an automobile"]
    enc = mllm._encode([img], [mllm.chat_prompt(question)], "left")
    per_token = [token_logprobs(mllm, enc, o) for o in options]
    assert [len(lp) for lp in per_token] == [1, 2, 2]
    expected = {"sum": [sum(lp) for lp in per_token],
                "token": [sum(lp) / len(lp) for lp in per_token],
                "char": [sum(lp) / len(o) for lp, o in zip(per_token, options)]}
    assert {how: int(np.argmax(v)) for how, v in expected.items()} == {"sum": 0, "token": 1, "char": 2}

    scores = mllm.loglik(img, question, options)
    counts = [len(ids) for ids in mllm.option_ids(options)]
    for how, want in expected.items():
        assert normalise(scores, options, counts, how).tolist() == pytest.approx(want, abs=1e-9)
    assert {how: int(k) for how, k in best_options(scores, options, counts).items()} == {"sum": 0, "token": 1,
                                                                                          "char": 2}
    rows = mllm.loglik_many(images(3), question, options)  # (B, n): every row normalised alike
    assert normalise(rows, options, counts, "token") == pytest.approx(np.asarray(rows) / counts, abs=1e-12)
    with pytest.raises(RetainError, match="Unknown option-score normalisation"):
        normalise(scores, options, counts, "word")
    with pytest.raises(RetainError, match="3 option scores but 2 option lengths"):
        normalise(scores, options, counts[:2], "token")


def test_generate_is_batched_greedy_and_deterministic(mllm):
    qs = ["What is this?", "Name the object in the picture, please."]
    a = mllm.generate(images(2), qs, max_new_tokens=4, batch_size=2)
    b = [mllm.generate(images(2)[k:k + 1], qs[k:k + 1], max_new_tokens=4)[0] for k in range(2)]
    assert len(a) == 2 and all(isinstance(x, str) for x in a)
    assert a == b  # left padding does not change a greedy answer
    assert mllm.generate(None, ["Say hi."], max_new_tokens=3)  # text-only turn


def test_bad_names_and_options(mllm):
    with pytest.raises(RetainError, match="Unknown MLLM"):
        load_mllm("not-an-mllm")
    with pytest.raises(RetainError, match="has no tokens"):
        mllm.loglik(images(1)[0], "q", ["cat", ""])
