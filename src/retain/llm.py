"""A client for any OpenAI-compatible chat-completions endpoint (hosted or a local server).

Used by the EMT judge and by MultiMon's categorise/generate/steer steps. Retries HTTP 429
and 5xx answers, timeouts, broken connections and malformed responses with exponential
backoff; fails at once on other 4xx answers. Responses are cached on disk, keyed by the
endpoint, the model, the messages and the sampling parameters, so a rerun costs nothing.
The API key is read from an environment variable at each request and never stored,
printed or written anywhere.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from retain.errors import RetainError
from retain.io import write_json


class LMError(RetainError):
    """The endpoint could not give a usable answer (after retries where they make sense)."""


@dataclass
class ChatClient:
    base_url: str
    """e.g. https://api.openai.com/v1 or http://127.0.0.1:8000/v1"""
    model: str
    api_key_env: str = "OPENAI_API_KEY"
    """name of the environment variable holding the key (unset: no Authorization header)"""
    timeout: float = 30.0
    max_retries: int = 3
    backoff: float = 1.0
    """seconds before the first retry, doubled after each"""
    cache_dir: str | None = None

    def __repr__(self) -> str:  # never shows the key; it is not an attribute anyway
        return f"ChatClient(base_url={self.base_url!r}, model={self.model!r}, api_key_env={self.api_key_env!r})"

    @property
    def fingerprint(self) -> str:
        return f"{self.base_url.rstrip('/')}|{self.model}"

    def cache_key(self, messages: list[dict], params: dict) -> str:
        blob = json.dumps([self.fingerprint, messages, params], sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()

    def chat(self, messages: list[dict], use_cache: bool = True, **params) -> str:
        """The assistant's reply to `messages` (temperature 0 unless given)."""
        params = {"temperature": 0, **params}
        key = self.cache_key(messages, params)
        cached = self._cache_file(key)
        if use_cache and cached and cached.exists():
            return json.loads(cached.read_text())["content"]
        content = self._request(messages, params)
        if cached:
            write_json(cached, {"fingerprint": self.fingerprint, "content": content})
        return content

    def _cache_file(self, key: str) -> Path | None:
        return Path(self.cache_dir) / f"{key}.json" if self.cache_dir else None

    def _request(self, messages: list[dict], params: dict) -> str:
        url = self.base_url.rstrip("/") + "/chat/completions"
        body = json.dumps({"model": self.model, "messages": messages, **params}).encode()
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(self.api_key_env)
        if key:
            headers["Authorization"] = f"Bearer {key}"
        last = ""
        for attempt in range(self.max_retries + 1):
            if attempt:
                time.sleep(self.backoff * 2 ** (attempt - 1))
            try:
                req = urllib.request.Request(url, data=body, headers=headers, method="POST")
                with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                    raw = resp.read()
            except urllib.error.HTTPError as e:
                last = f"HTTP {e.code}"
                if e.code == 429 or e.code >= 500:
                    continue
                raise LMError(f"The chat endpoint {url} answered HTTP {e.code} for model {self.model!r}: "
                              "check the base URL, the model name and the key's environment variable "
                              f"({self.api_key_env}).") from None
            except (TimeoutError, socket.timeout):
                last = f"no answer within {self.timeout:g} s"
                continue
            except (urllib.error.URLError, ConnectionError, OSError) as e:
                last = f"unreachable ({getattr(e, 'reason', e)})"
                continue
            try:
                return json.loads(raw)["choices"][0]["message"]["content"]
            except (ValueError, KeyError, IndexError, TypeError):
                last = "a malformed response (not chat-completions JSON)"
                continue
        raise LMError(f"The chat endpoint {url} (model {self.model!r}) gave {last} on all "
                      f"{self.max_retries + 1} attempts.")
