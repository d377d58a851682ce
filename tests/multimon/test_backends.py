"""MultiMon's language-model backends: the chat backend against a real loopback server, the offline one."""

import pytest

from retain.llm import ChatClient, LMError
from retain.multimon.backends import (CATEGORISE_PROMPT, ChatBackend, FailureType, OfflineBackend,
                                      parse_failure_types, parse_pairs)

CATEGORIES_REPLY = """Here are the failures:
1. Negation | The embedding ignores "not" and "no", so a caption and its negation look alike. | pairs: 1, 3
2. **Spatial relations** | Left/right and above/below are not encoded. | pairs: 2, 9
3. Counting | Numbers of objects are ignored. | pairs:
"""
PAIRS_REPLY = '("a dog on the left", "a dog on the right"),\n("a cat above a box", "a cat below a box"),\nnoise\n' \
              '("same", "Same"),\n("a dog on the left", "a dog on the right"),'


def backend(server, tmp_path, **kw):
    return ChatBackend(ChatClient(server.url, "lm", api_key_env="RETAIN_TEST_API_KEY", timeout=kw.pop("timeout", 2.0),
                                  max_retries=kw.pop("max_retries", 2), backoff=0.01, cache_dir=str(tmp_path / "c")))


def test_parsers():
    types = parse_failure_types(CATEGORIES_REPLY, n_pairs=3)
    assert [t.name for t in types] == ["Negation", "Spatial relations", "Counting"]
    assert types[0].pairs == [0, 2] and types[1].pairs == [1] and types[2].pairs == []  # 9 is out of range
    assert "left/right" in types[1].description.lower()
    assert parse_pairs(PAIRS_REPLY) == [("a dog on the left", "a dog on the right"), ("a cat above a box", "a cat below a box")]
    assert parse_failure_types("I cannot help with that.", 3) == [] and parse_pairs("nothing here") == []


def test_categorise_and_generate_send_the_papers_prompts(server, tmp_path):
    server.script = [("ok", CATEGORIES_REPLY), ("ok", PAIRS_REPLY)]
    b = backend(server, tmp_path)
    pairs = [("a red dog", "a dog that is not red"), ("a cat on the left", "a cat on the right"), ("no dogs", "dogs")]
    types = b.categorise(pairs)
    sent = server.requests[0]["body"]["messages"][0]["content"]
    assert sent.startswith(CATEGORISE_PROMPT.split("{pairs}")[0]) and '2. "a cat on the left" / "a cat on the right"' in sent
    assert "specific enough that someone could reliably produce examples" in sent
    assert [t.pairs for t in types] == [[0, 2], [1], []]
    new = b.generate(types[1], 41, avoid={("a cat below a box", "a cat above a box")})
    asked = server.requests[1]["body"]["messages"][0]["content"]
    assert asked.startswith("Write down 41 additional pairs") and "Spatial relations: Left/right" in asked
    assert new == [("a dog on the left", "a dog on the right")]  # the avoided pair (either order) is dropped


def test_http_failures_are_retried_then_answered(server, tmp_path):
    server.script = [("status", 500), ("garbage",), ("sleep", 0.6), ("ok", PAIRS_REPLY)]
    b = backend(server, tmp_path, timeout=0.3, max_retries=3)
    assert len(b.generate(FailureType("spatial", "left and right"), 5)) == 2
    assert len(server.requests) == 4


def test_unparseable_reply_is_asked_again_uncached_then_reported(server, tmp_path):
    server.script = [("ok", "Sorry, no."), ("ok", CATEGORIES_REPLY)]
    b = backend(server, tmp_path)
    assert len(b.categorise([("a", "b")] * 3)) == 3 and len(server.requests) == 2
    server.script = [("ok", "Sorry, no."), ("ok", "Still no.")]
    with pytest.raises(LMError, match="could not be parsed twice"):
        b.generate(FailureType("x", "y"), 3)


def test_endpoint_down_raises_lm_error_after_retries(server, tmp_path):
    server.script = [("status", 503)] * 3
    b = backend(server, tmp_path, max_retries=2)
    with pytest.raises(LMError, match="HTTP 503 on all 3 attempts"):
        b.categorise([("a", "b")])
    dead = ChatBackend(ChatClient("http://127.0.0.1:9/v1", "lm", timeout=0.5, max_retries=1, backoff=0.01))
    with pytest.raises(LMError, match="unreachable"):
        dead.relevant("a", "b", "self-driving cars")


def test_steering_question(server, tmp_path):
    server.script = [("ok", "Yes."), ("ok", "maybe"), ("ok", "no")]
    b = backend(server, tmp_path)
    assert b.relevant("a car at night", "a car in the day", "self-driving cars") is True
    assert 'Is the difference between "a car at night" and "a car in the day" important for self-driving cars?' in \
        server.requests[0]["body"]["messages"][0]["content"]
    assert b.relevant("a", "b", "driving") is False  # "maybe" is asked again, uncached
    assert len(server.requests) == 3


def test_offline_backend_categorises_by_lexical_difference_and_rewrites():
    corpus = ["a red circle on the left.", "two blue triangles at the top.", "a dog chasing a cat.",
              "a small green rectangle.", "a photo of a black dog."] * 3
    b = OfflineBackend(corpus, seed=0)
    pairs = [("a red circle", "a blue circle"), ("a dog on the left", "a dog on the right"),
             ("a green dress", "a yellow dress"), ("a cat", "not a cat")]
    types = b.categorise(pairs)
    assert types[0].name == "colour" and types[0].pairs == [0, 2]  # the largest type first
    assert {t.name for t in types} == {"colour", "spatial relation", "negation"}
    new = b.generate(types[0], 3)
    assert 0 < len(new) <= 3 and all(a in corpus and a != b for a, b in new)
    assert b.generate(types[0], 3) == new  # seeded
    with pytest.raises(LMError, match="offline backend rewrites only"):
        b.generate(FailureType("Counting", "numbers"), 3)
