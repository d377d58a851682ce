"""The chat client against a loopback server that misbehaves: invalid replies, broken bodies,
Retry-After, a trickling server, a dead address; and the rules on where a key may go."""

from __future__ import annotations

import json
import time

import pytest

from loopback import dead_url
from retain.llm import ChatClient, EndpointDown, KeyRefused, LMError

Q = [{"role": "user", "content": "q"}]


def client(url, tmp_path=None, **kw):
    return ChatClient(url, "judge-model", api_key_env="RETAIN_TEST_API_KEY", timeout=kw.pop("timeout", 2.0),
                      max_retries=kw.pop("max_retries", 2), backoff=0.01,
                      cache_dir=str(tmp_path / "cache") if tmp_path else None, **kw)


@pytest.mark.parametrize("bad", [("ok", None), ("ok", 5), ("no_choices",)])
def test_an_invalid_reply_is_retried_and_never_cached(server, tmp_path, bad):
    server.script = [bad, ("ok", "yes")]
    c = client(server.url, tmp_path)
    assert c.chat(Q) == "yes" and len(server.requests) == 2
    server.script = [bad] * 3
    with pytest.raises(LMError, match="invalid reply.*on all 3 attempts"):
        c.chat([{"role": "user", "content": "other"}])
    cached = [json.loads(f.read_text())["content"] for f in (tmp_path / "cache").iterdir()]
    assert cached == ["yes"]  # only the valid reply


def test_an_invalid_cached_reply_is_asked_again(server, tmp_path):
    c = client(server.url, tmp_path)
    path = tmp_path / "cache" / f"{c.cache_key(Q, {'temperature': 0})}.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"fingerprint": c.fingerprint, "content": None}))  # left by an older version
    server.script = [("ok", "no")]
    assert c.chat(Q) == "no" and len(server.requests) == 1
    assert json.loads(path.read_text())["content"] == "no"


def test_a_body_cut_short_and_a_malformed_status_line_are_retried(server, tmp_path):
    server.script = [("truncated",), ("bad_status",), ("ok", "no")]
    assert client(server.url, tmp_path).chat(Q) == "no"
    assert len(server.requests) == 3


def test_retry_after_is_honoured(server):
    server.script = [("status", 429, {"Retry-After": "1"}), ("ok", "yes")]
    assert client(server.url).chat(Q) == "yes"  # the client's own backoff is 0.01 s
    waited = server.requests[1]["time"] - server.requests[0]["time"]
    assert 0.9 <= waited < 2.0


def test_a_retry_after_past_the_deadline_fails_at_once(server):
    server.script = [("status", 503, {"Retry-After": "30"})]
    start = time.monotonic()
    with pytest.raises(LMError, match="would pass the 5 s deadline"):
        client(server.url, deadline=5.0).chat(Q)
    assert time.monotonic() - start < 1.0 and len(server.requests) == 1


def test_a_trickling_server_cannot_hold_a_request_past_its_deadline(server):
    server.script = [("trickle", "yes " * 20, 0.1)] * 3  # about 11 s per answer, one byte at a time
    start = time.monotonic()
    with pytest.raises(LMError, match="no complete answer within 1 s on all 1 attempts"):
        client(server.url, timeout=1.0, max_retries=0).chat(Q)
    assert time.monotonic() - start < 1.5
    start = time.monotonic()  # retries included, the whole call ends by its deadline
    with pytest.raises(LMError, match="no complete answer"):
        client(server.url, timeout=1.0, max_retries=2, deadline=1.5).chat(Q)
    assert time.monotonic() - start < 2.0


def test_the_breaker_trips_after_n_failures_in_a_row_naming_the_endpoint():
    url = dead_url()
    c = client(url, max_retries=0, breaker=3)
    for _ in range(2):
        with pytest.raises(LMError, match="unreachable") as e:
            c.chat(Q)
        assert not isinstance(e.value, EndpointDown)
    with pytest.raises(EndpointDown, match=f"{url} \\(model 'judge-model'\\) failed 3 requests in a row"):
        c.chat(Q)
    start = time.monotonic()
    with pytest.raises(EndpointDown):  # from now on at once, without asking
        c.chat([{"role": "user", "content": "another"}])
    assert time.monotonic() - start < 0.05


def test_a_success_resets_the_breaker(server):
    server.script = [("status", 500), ("ok", "yes"), ("status", 500), ("ok", "yes")]
    c = client(server.url, max_retries=0, breaker=2)
    for k in range(4):
        if k % 2 == 0:
            with pytest.raises(LMError) as e:
                c.chat([{"role": "user", "content": str(k)}])
            assert not isinstance(e.value, EndpointDown)
        else:
            assert c.chat([{"role": "user", "content": str(k)}]) == "yes"


def test_probe_tells_a_dead_address_from_a_live_one(server):
    url = dead_url()
    with pytest.raises(EndpointDown, match=f"Nothing answers at the chat endpoint {url}"):
        client(url).probe()
    client(server.url).probe()  # any HTTP answer will do
    assert server.requests == []  # no chat request was spent on it


def test_only_key_and_token_variables_may_be_sent():
    with pytest.raises(KeyRefused, match="AWS_SECRET_ACCESS_KEY.*_API_KEY or _TOKEN"):
        ChatClient("http://127.0.0.1:1/v1", "m", api_key_env="AWS_SECRET_ACCESS_KEY")
    ChatClient("http://127.0.0.1:1/v1", "m", api_key_env="HF_TOKEN")


def test_a_key_goes_to_a_config_url_only_when_its_host_is_allowed(server, monkeypatch):
    import retain.llm

    monkeypatch.setattr(retain.llm, "_command_line_hosts", set())
    monkeypatch.delenv("RETAIN_LLM_HOSTS", raising=False)
    monkeypatch.delenv("RETAIN_TEST_API_KEY", raising=False)
    client(server.url, url_trusted=False).chat(Q)  # no key set: nothing to protect
    monkeypatch.setenv("RETAIN_TEST_API_KEY", "sk-x")
    with pytest.raises(KeyRefused, match="RETAIN_LLM_HOSTS=127.0.0.1"):
        client(server.url, url_trusted=False)
    monkeypatch.setenv("RETAIN_LLM_HOSTS", "example.org, 127.0.0.1")
    client(server.url, url_trusted=False).chat([{"role": "user", "content": "2"}])
    monkeypatch.delenv("RETAIN_LLM_HOSTS")
    retain.llm.allow_hosts([server.url])  # as the CLI does for a URL on its command line
    client(server.url, url_trusted=False).chat([{"role": "user", "content": "3"}])
    assert [r["auth"] for r in server.requests] == [None, "Bearer sk-x", "Bearer sk-x"]


def test_no_ambient_openai_variable_is_sent(server, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-ambient")
    monkeypatch.setenv("OPENAI_ORG_ID", "org-ambient")
    monkeypatch.delenv("RETAIN_TEST_API_KEY", raising=False)
    client(server.url).chat(Q)
    assert server.requests[0]["auth"] is None and "openai-organization" not in server.requests[0]["headers"]
