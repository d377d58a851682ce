"""Language-model backends for MultiMon's categorise, generate and steer steps.

- `ChatBackend`: any OpenAI-compatible chat endpoint (hosted, or a local server such as
  vLLM or llama.cpp) through `retain.llm.ChatClient` (retries, timeouts, response cache,
  key from the environment). Its prompts are the paper's (Tong, Jones and Steinhardt,
  2023, and their released prompts): ask for general failures specific enough that
  someone could reliably produce new examples, and for 41 new pairs per failure.
- `OfflineBackend`: no language model. Failure types are the lexical difference between
  the two sentences of a pair (`retain.multimon.lexical`), new pairs are controlled
  rewrites of that type applied to corpus sentences, and steering keeps pairs whose
  sentences the reference encoder places near the steering description.

A backend that cannot answer raises `LMError` (after the client's retries and one fresh
re-ask for a reply that does not parse); the pipeline records it and goes on.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from retain.eval.judge import parse_verdict
from retain.llm import ChatClient, LMError

Pair = tuple[str, str]

CATEGORISE_PROMPT = (
    "I will provide a series of data for you to remember. Subsequently, I will ask you some questions to test "
    "your performance! Here are some pairs of prompts for you to memorize.\n{pairs}\n\n"
    "I'm trying to find failures with an embedding model. The above are some pairs of sentences that it encodes "
    "very similarly, even though they're conveying different concepts. Using these specific examples, are there "
    "any general types of failures you notice the embedding is making, or any common features that the embedding "
    "fails to encode? Try to give failures that are specific enough that someone could reliably produce examples "
    "that the embedding would encode similarly, even though it shouldn't. Please try to give as many general "
    "failures as possible. Please focus on differences that are important visually, as these embeddings are later "
    "used to generate images, or videos. In your failure modes, please explain clearly why the failure would lead "
    "to problems for future tasks related to visual generation. Please summarize as many as you can and stick to "
    "the examples.\n\n"
    "Answer with one failure per line, in this format and nothing else:\n"
    "<number>. <short name> | <description> | pairs: <numbers of the pairs above that show it>"
)
GENERATE_PROMPT = (
    "Write down {n} additional pairs of prompts that an embedding model with the following failure mode might "
    "encode similarly, even though they would correspond to different images if used as captions. Use the "
    "following format:\n(\"prompt1\", \"prompt2\"),\n(\"prompt1\", \"prompt2\"),\nYou will be evaluated on how well "
    "you actually perform. Your sentence structure and length can be creative; extrapolate based on the failure "
    "mode you've summarized. Be both creative and cautious.\nFailure Mode:\n{name}: {description}"
)
STEER_PROMPT = 'Please respond with either "yes" or "no" to the following: Is the difference between "{a}" and "{b}" important for {steer}?'

_TYPE_LINE = re.compile(r"^\s*(?:\d+[.)]\s*)?\**(?P<name>[^|*]+?)\**\s*\|\s*(?P<desc>[^|]+?)\s*(?:\|\s*pairs?\s*:?\s*(?P<pairs>[\d,\s]*))?\s*$",
                        re.IGNORECASE)
_PAIR = re.compile(r"\(\s*\"(?P<a>[^\"]+)\"\s*,\s*\"(?P<b>[^\"]+)\"\s*\)")


@dataclass
class FailureType:
    name: str
    description: str
    pairs: list[int] = field(default_factory=list)
    """indices of the mined pairs that show it"""


def parse_failure_types(reply: str, n_pairs: int) -> list[FailureType]:
    """Failure types from a categorisation reply (`<n>. name | description | pairs: 1, 4`).

    Pair numbers are 1-based in the prompt, 0-based here; numbers out of range are dropped.
    """
    types = []
    for line in reply.splitlines():
        m = _TYPE_LINE.match(line)
        if not m:
            continue
        nums = [int(x) - 1 for x in re.findall(r"\d+", m.group("pairs") or "")]
        types.append(FailureType(m.group("name").strip(), m.group("desc").strip(),
                                 sorted({k for k in nums if 0 <= k < n_pairs})))
    return types


def parse_pairs(reply: str) -> list[Pair]:
    """`("prompt1", "prompt2")` tuples from a generation reply, distinct, in order."""
    seen, out = set(), []
    for m in _PAIR.finditer(reply):
        pair = (m.group("a").strip(), m.group("b").strip())
        if pair[0].lower() != pair[1].lower() and pair not in seen:
            seen.add(pair)
            out.append(pair)
    return out


class ChatBackend:
    """The paper's prompts sent to an OpenAI-compatible chat endpoint."""

    name = "chat"

    def __init__(self, client: ChatClient, max_tokens: int = 2048):
        self.client = client
        self.max_tokens = max_tokens

    def _ask(self, prompt: str, parse, what: str):
        messages = [{"role": "user", "content": prompt}]
        reply = ""
        for attempt in range(2):  # a reply that does not parse is asked once more, uncached
            reply = self.client.chat(messages, use_cache=attempt == 0, max_tokens=self.max_tokens)
            parsed = parse(reply)
            if parsed:
                return parsed
        raise LMError(f"The language model's reply to the {what} prompt could not be parsed twice "
                      f"(it began {reply[:120]!r}).")

    def categorise(self, pairs: list[Pair]) -> list[FailureType]:
        listing = "\n".join(f"{k + 1}. \"{a}\" / \"{b}\"" for k, (a, b) in enumerate(pairs))
        return self._ask(CATEGORISE_PROMPT.format(pairs=listing), lambda r: parse_failure_types(r, len(pairs)),
                         "categorisation")

    def generate(self, failure: FailureType, n: int, avoid: set[Pair] = frozenset()) -> list[Pair]:
        prompt = GENERATE_PROMPT.format(n=n, name=failure.name, description=failure.description)
        pairs = self._ask(prompt, parse_pairs, f"generation ({failure.name})")
        return [p for p in pairs if p not in avoid and p[::-1] not in avoid][:n]

    def relevant(self, a: str, b: str, steer: str) -> bool:
        verdict = None
        for attempt in range(2):
            reply = self.client.chat([{"role": "user", "content": STEER_PROMPT.format(a=a, b=b, steer=steer)}],
                                     use_cache=attempt == 0, max_tokens=3)
            verdict = parse_verdict(reply)
            if verdict is not None:
                return verdict
        raise LMError(f"The steering question for ({a!r}, {b!r}) got neither yes nor no twice.")


class OfflineBackend:
    """No language model: lexical categories, controlled rewrites, steering by the reference encoder.

    Args:
        corpus: sentences to rewrite into new pairs (the mined corpus).
        reference: the reference `TextEncoder` (for steering only).
        seed: the rewrites' random seed.
        steer_threshold: cosine between a pair's sentences and the steering text above which
            the pair counts as relevant.
    """

    name = "offline"

    def __init__(self, corpus: list[str], reference=None, seed: int = 0, steer_threshold: float = 0.3):
        self.corpus = corpus
        self.reference = reference
        self.seed = seed
        self.steer_threshold = steer_threshold
        self._steer_cache: dict[str, object] = {}

    def categorise(self, pairs: list[Pair]) -> list[FailureType]:
        from retain.multimon.lexical import CATEGORIES, categorise_pair

        groups: dict[str, list[int]] = {}
        for k, (a, b) in enumerate(pairs):
            groups.setdefault(categorise_pair(a, b), []).append(k)
        ranked = sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0]))
        return [FailureType(name, CATEGORIES[name], idx) for name, idx in ranked]

    def generate(self, failure: FailureType, n: int, avoid: set[Pair] = frozenset(), seeds: list[str] | None = None,
                 keep=None) -> list[Pair]:
        """Up to n distinct (sentence, rewrite) pairs of the failure's type, none of them in `avoid`.

        Args:
            seeds: the sentences to rewrite, in a seeded random order (default: the corpus).
            keep: a predicate on (sentence, rewrite); pairs it rejects are skipped.
        """
        from retain.multimon.lexical import CATEGORIES, rewrite

        if failure.name not in CATEGORIES:
            raise LMError(f"The offline backend rewrites only its own failure types ({', '.join(CATEGORIES)}), "
                          f"not {failure.name!r}.")
        seeds = self.corpus if seeds is None else seeds
        rng = np.random.default_rng([self.seed, sorted(CATEGORIES).index(failure.name)])
        out, seen = [], set(avoid)
        for k in rng.permutation(len(seeds)):
            new = rewrite(seeds[k], failure.name, rng)
            pair = (seeds[k], new)
            if new is None or pair in seen or pair[::-1] in seen or (keep is not None and not keep(*pair)):
                continue
            seen.add(pair)
            out.append(pair)
            if len(out) == n:
                break
        return out

    def relevant(self, a: str, b: str, steer: str) -> bool:
        if self.reference is None:
            raise LMError("Offline steering needs the reference encoder.")
        if steer not in self._steer_cache:
            self._steer_cache[steer] = self.reference.encode([steer])[0]
        emb = self.reference.encode([a, b])
        return bool(float((emb @ self._steer_cache[steer]).max()) >= self.steer_threshold)
