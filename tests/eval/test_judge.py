"""The OpenAI-compatible client and the EMT judge against a real HTTP server on loopback."""

from __future__ import annotations

import pytest

from retain.eval.judge import LLMJudge, parse_verdict
from retain.llm import ChatClient, LMError

SECRET = "sk-test-never-written-anywhere-123"


def client(server, tmp_path, **kw):
    return ChatClient(server.url, "judge-model", api_key_env="RETAIN_TEST_API_KEY", timeout=kw.pop("timeout", 2.0),
                      max_retries=kw.pop("max_retries", 2), backoff=0.01, cache_dir=str(tmp_path / "cache"), **kw)


def test_chat_sends_the_protocol_and_caches(server, tmp_path, monkeypatch):
    monkeypatch.setenv("RETAIN_TEST_API_KEY", SECRET)
    server.script = [("ok", "Yes.")]
    c = client(server, tmp_path)
    assert c.chat([{"role": "user", "content": "hi"}]) == "Yes."
    req = server.requests[0]
    assert req["path"] == "/v1/chat/completions" and req["auth"] == f"Bearer {SECRET}"
    assert req["body"]["model"] == "judge-model" and req["body"]["temperature"] == 0
    assert c.chat([{"role": "user", "content": "hi"}]) == "Yes."  # from the cache
    assert len(server.requests) == 1
    for f in (tmp_path / "cache").iterdir():
        assert SECRET not in f.read_text()
    assert SECRET not in repr(c)


@pytest.mark.parametrize("failures", [[("status", 500)], [("status", 503), ("garbage",)], [("sleep", 1.5)]])
def test_transient_failures_are_retried(server, tmp_path, failures):
    server.script = [*failures, ("ok", "no")]
    assert client(server, tmp_path, timeout=0.5).chat([{"role": "user", "content": "q"}]) == "no"
    assert len(server.requests) == len(failures) + 1


def test_persistent_failure_and_client_error_are_reported(server, tmp_path, monkeypatch):
    monkeypatch.setenv("RETAIN_TEST_API_KEY", SECRET)
    server.script = [("status", 500)] * 3
    with pytest.raises(LMError, match="HTTP 500 on all 3 attempts") as e:
        client(server, tmp_path).chat([{"role": "user", "content": "q"}])
    assert SECRET not in str(e.value)
    server.script = [("status", 401)]
    with pytest.raises(LMError, match="HTTP 401.*RETAIN_TEST_API_KEY"):
        client(server, tmp_path).chat([{"role": "user", "content": "other"}])
    assert len(server.requests) == 4  # a 401 is not retried


def test_unreachable_endpoint_is_a_clear_error(tmp_path):
    import socket

    with socket.socket() as s:  # a port with nobody listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    c = ChatClient(f"http://127.0.0.1:{port}/v1", "m", timeout=0.5, max_retries=1, backoff=0.01)
    with pytest.raises(LMError, match="unreachable"):
        c.chat([{"role": "user", "content": "q"}])


def test_judge_scores_every_item_whatever_fails(server, tmp_path):
    server.script = [
        ("ok", "yes"),                                  # item 1: correct
        ("status", 500), ("ok", "No, it is a dog."),    # item 2: retried, then wrong
        ("ok", "maybe"), ("ok", "perhaps"),             # item 3: unclear twice -> reported
        ("status", 500), ("status", 500), ("status", 500),  # item 4: endpoint fails -> reported
        ("ok", "YES"),                                  # item 5: still judged
    ]
    judge = LLMJudge(client(server, tmp_path), unclear_retries=1)
    items = [("a cat", "cat"), ("dog", "cat"), ("cat?", "cat"), ("kitten", "cat"), ("cats", "cat")]
    verdicts = judge.judge_many(items, ["cat", "dog"])
    assert [v.correct for v in verdicts] == [True, False, None, None, True]
    assert "neither yes nor no" in verdicts[2].error
    assert "HTTP 500" in verdicts[3].error


def test_parse_verdict():
    assert parse_verdict("Yes.") is True and parse_verdict(" no, it's a dog") is False
    assert parse_verdict("yesterday") is None and parse_verdict("I think yes") is None
