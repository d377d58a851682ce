"""A client for any OpenAI-compatible chat-completions endpoint (hosted or a local server).

Used by the EMT judge and by MultiMon's categorise/generate/steer steps, on top of the
official `openai` client (its typed errors, timeouts and connection handling). Around it:

- Retries: HTTP 408/409/429 and 5xx answers, timeouts, broken connections (a body cut
  short, a malformed status line) and invalid replies are retried with exponential backoff,
  waiting what a `Retry-After` header asks; other 4xx answers fail at once.
- Deadlines: one attempt may take at most `timeout` seconds from the first byte sent to the
  last byte read, however slowly the server trickles its answer; one `chat` call, retries
  and waits included, at most `deadline` seconds.
- Valid replies only: a reply whose content is null or not a string, or that has no
  choices, is an invalid reply (retried, then `InvalidReply`), and is never cached.
- A circuit breaker: after `breaker` requests in a row fail, the endpoint counts as down and
  every later call raises `EndpointDown` at once, naming the endpoint, so a command stops
  with one message instead of spending minutes per item producing nothing.
- A disk cache of replies, keyed by the endpoint, the model, the messages and the sampling
  parameters, so a rerun costs nothing.

Keys: the key is read from an environment variable at each request and never stored,
printed or written anywhere. Only variables whose names end in `_API_KEY` or `_TOKEN` may
be sent. A key goes only to a host the user named: a URL given on the command line (or in
code) is trusted; a URL that came from a config file alone receives the key only when its
host is listed in `$RETAIN_LLM_HOSTS` (comma-separated host names) or was given on the
command line (`retain run ... eval.judge_url=...`, `retain mine ... lm_url=...`). So a
shared config cannot send any secret of the environment to any host. Without a key (the
variable unset) nothing is sent and nothing is checked.
"""

from __future__ import annotations

import email.utils
import hashlib
import json
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from retain.errors import RetainError
from retain.io import write_json

KEY_SUFFIXES = ("_API_KEY", "_TOKEN")
HOSTS_ENV = "RETAIN_LLM_HOSTS"
RETRIED_STATUS = (408, 409, 429)
_command_line_hosts: set[str] = set()


class LMError(RetainError):
    """The endpoint could not give a usable answer (after retries where they make sense)."""


class InvalidReply(LMError):
    """The endpoint answered, but not with a chat completion whose content is text."""


class EndpointDown(LMError):
    """Too many requests in a row failed (or nothing answers at the URL): stop, do not go on item by item."""


class KeyRefused(RetainError):
    """The key's variable or its destination is not allowed (see the module docstring)."""


def url_host(url: str) -> str:
    return (urlsplit(url).hostname or "").lower()


def allow_hosts(urls) -> None:
    """Trust the hosts of `urls` with a key: the CLI calls this with the URLs given on its command line."""
    _command_line_hosts.update(url_host(u) for u in urls if url_host(u))


def allowed_hosts() -> set[str]:
    listed = {h.strip().lower() for h in os.environ.get(HOSTS_ENV, "").split(",") if h.strip()}
    return listed | _command_line_hosts


def check_key(base_url: str, api_key_env: str, url_trusted: bool = True, setting: str = "the URL") -> None:
    """Raise KeyRefused if the key variable's name, or the host it would go to, is not allowed."""
    if not api_key_env.endswith(KEY_SUFFIXES):
        raise KeyRefused(f"The key variable {api_key_env!r} is refused: only variables whose names end in "
                         f"{' or '.join(KEY_SUFFIXES)} are sent to an LLM endpoint (e.g. OPENAI_API_KEY).")
    if url_trusted or not os.environ.get(api_key_env):
        return
    host = url_host(base_url)
    if host not in allowed_hosts():
        raise KeyRefused(f"{setting} ({base_url}) comes from a config file, and ${api_key_env} would be sent to "
                         f"{host!r}: name the URL on the command line (e.g. {setting}={base_url}) or allow the host "
                         f"with {HOSTS_ENV}={host}.")


def retry_after(headers) -> float | None:
    """Seconds a `Retry-After` (or `retry-after-ms`) header asks to wait, None without one."""
    if headers is None:
        return None
    if headers.get("retry-after-ms"):
        try:
            return float(headers["retry-after-ms"]) / 1000
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        date = email.utils.parsedate_tz(value)
        return None if date is None else max(email.utils.mktime_tz(date) - time.time(), 0.0)


@dataclass
class ChatClient:
    base_url: str
    """e.g. https://api.openai.com/v1 or http://127.0.0.1:8000/v1"""
    model: str
    api_key_env: str = "OPENAI_API_KEY"
    """name of the environment variable holding the key (unset: no Authorization header)"""
    timeout: float = 30.0
    """seconds one attempt may take, first byte sent to last byte read"""
    max_retries: int = 3
    backoff: float = 1.0
    """seconds before the first retry, doubled after each (a Retry-After header takes precedence)"""
    deadline: float | None = None
    """seconds one `chat` call may take, retries and waits included (default: timeout x attempts + waits)"""
    breaker: int = 5
    """requests failing in a row after which the endpoint counts as down (EndpointDown)"""
    cache_dir: str | None = None
    url_trusted: bool = True
    """False when base_url came from a config file: a key then goes only to allowed hosts"""
    _failures: int = field(default=0, init=False, repr=False)
    _down: str | None = field(default=None, init=False, repr=False)
    _client: object = field(default=None, init=False, repr=False)

    def __post_init__(self):
        check_key(self.base_url, self.api_key_env, self.url_trusted)

    def __repr__(self) -> str:  # never shows the key; it is not an attribute anyway
        return f"ChatClient(base_url={self.base_url!r}, model={self.model!r}, api_key_env={self.api_key_env!r})"

    @property
    def fingerprint(self) -> str:
        return f"{self.base_url.rstrip('/')}|{self.model}"

    @property
    def endpoint(self) -> str:
        return f"{self.base_url} (model {self.model!r})"

    @property
    def total_deadline(self) -> float:
        if self.deadline is not None:
            return self.deadline
        return self.timeout * (self.max_retries + 1) + self.backoff * (2 ** self.max_retries - 1)

    def cache_key(self, messages: list[dict], params: dict) -> str:
        blob = json.dumps([self.fingerprint, messages, params], sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()

    def chat(self, messages: list[dict], use_cache: bool = True, **params) -> str:
        """The assistant's reply to `messages` (temperature 0 unless given)."""
        if self._down:
            raise EndpointDown(self._down)
        params = {"temperature": 0, **params}
        cached = self._cache_file(self.cache_key(messages, params))
        if use_cache and cached and cached.exists():
            content = _cached_content(cached)
            if content is not None:
                return content
        try:
            content = self._request(messages, params)
        except LMError as e:
            self._failures += 1
            if self._failures >= self.breaker:
                self._down = (f"The chat endpoint {self.endpoint} failed {self._failures} requests in a row "
                              f"(last: {e}); it counts as down: check that it runs and is reachable, then rerun.")
                raise EndpointDown(self._down) from None
            raise
        self._failures = 0
        if cached:
            write_json(cached, {"fingerprint": self.fingerprint, "content": content})
        return content

    def probe(self, timeout: float = 5.0) -> None:
        """Raise EndpointDown unless something answers HTTP at base_url (any status will do; no key is sent)."""
        import urllib.error
        import urllib.request

        try:
            urllib.request.urlopen(self.base_url.rstrip("/") + "/models", timeout=timeout).close()
        except urllib.error.HTTPError:  # an HTTP answer, whatever its status: something listens
            pass
        except (OSError, ValueError) as e:  # refused, unresolvable, timed out, not a URL
            raise EndpointDown(f"Nothing answers at the chat endpoint {self.endpoint}: {type(e).__name__} "
                               f"({e}). Start the server or fix the URL, then rerun.") from None

    def _cache_file(self, key: str) -> Path | None:
        return Path(self.cache_dir) / f"{key}.json" if self.cache_dir else None

    def _request(self, messages: list[dict], params: dict) -> str:
        import openai

        start = time.monotonic()
        end = start + self.total_deadline
        last, attempts = "", 0
        for attempt in range(self.max_retries + 1):
            left = end - time.monotonic()
            if left <= 0:
                break
            attempts += 1
            wait = self.backoff * 2 ** attempt
            limit = min(self.timeout, left)
            try:
                return _content(self._attempt(messages, params, limit))
            except openai.APIStatusError as e:
                last = f"HTTP {e.status_code}"
                if e.status_code not in RETRIED_STATUS and e.status_code < 500:
                    raise LMError(f"The chat endpoint {self.endpoint} answered HTTP {e.status_code}: check the base "
                                  f"URL, the model name and the key's environment variable ({self.api_key_env}).") from None
                wait = retry_after(e.response.headers) or wait
            except (openai.APITimeoutError, TimeoutError):
                last = f"no complete answer within {limit:.3g} s"
            except openai.APIConnectionError as e:
                last = f"unreachable or a broken connection ({e.__cause__ or e})"
            except (InvalidReply, ValueError) as e:
                last = f"an invalid reply ({e})"
            if attempt == self.max_retries:
                break
            if time.monotonic() + wait >= end:
                last += f"; the next try (after {wait:g} s) would pass the {self.total_deadline:g} s deadline"
                break
            time.sleep(wait)
        if attempts == self.max_retries + 1 and "deadline" not in last:
            raise LMError(f"The chat endpoint {self.endpoint} gave {last} on all {attempts} attempts.")
        raise LMError(f"The chat endpoint {self.endpoint} gave {last or 'no answer'} "
                      f"({attempts} attempt(s) in {time.monotonic() - start:.1f} s).")

    def _attempt(self, messages: list[dict], params: dict, limit: float):
        """One request, cut off after `limit` seconds even if the server keeps trickling bytes."""
        import openai

        key = os.environ.get(self.api_key_env)
        check_key(self.base_url, self.api_key_env, self.url_trusted)
        headers = {"Authorization": f"Bearer {key}" if key else openai.Omit(),  # never OPENAI_* from the environment
                   "OpenAI-Organization": openai.Omit(), "OpenAI-Project": openai.Omit()}
        if self._client is None:
            self._client = openai.OpenAI(base_url=self.base_url, api_key="sent-per-request", max_retries=0)
        client, box = self._client, {}

        def call():
            try:
                box["reply"] = client.with_options(timeout=limit).chat.completions.create(
                    model=self.model, messages=messages, extra_headers=headers, extra_body=params)
            except BaseException as e:  # handed to the waiting thread
                box["error"] = e

        worker = threading.Thread(target=call, daemon=True)
        worker.start()
        worker.join(limit)
        if worker.is_alive():  # a trickling server: drop its connection, the next attempt gets a fresh client
            self._client = None
            client.close()
            raise TimeoutError
        if "error" in box:
            raise box["error"]
        return box["reply"]


def _content(reply) -> str:
    choices = getattr(reply, "choices", None)
    if not choices:
        raise InvalidReply("no choices")
    content = getattr(getattr(choices[0], "message", None), "content", None)
    if not isinstance(content, str):
        raise InvalidReply(f"the content is {type(content).__name__}, not text")
    return content


def _cached_content(path: Path) -> str | None:
    """A cached reply, or None for an unreadable or invalid entry (asked again and overwritten)."""
    try:
        content = json.loads(path.read_text())["content"]
    except (ValueError, KeyError, TypeError, OSError):
        return None
    return content if isinstance(content, str) else None
