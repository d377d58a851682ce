"""LLM judges: does a free-text answer name the image's class (EMT, Zhai et al., 2023), and
is an open answer correct given its references (instruction tasks that ask for a judge)?

EMT's paper asked GPT-3.5 whether the MLLM's answer and the label mean the same object.
Any OpenAI-compatible endpoint serves (see `retain.llm.ChatClient`). A judge reply must
begin with yes or no; any other reply is asked again (uncached) and, if it stays unclear,
reported for that item. No failure of one item stops the others, except an endpoint that
counts as down (`retain.llm.EndpointDown`): that stops the evaluation with one message.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from retain.llm import ChatClient, EndpointDown, LMError

JUDGE_SYSTEM = "You grade answers of an image classifier. Reply with one word: yes or no."
JUDGE_PROMPT = (
    "The image shows a {label}. The possible classes were: {classes}.\n"
    "The model answered: \"{answer}\"\n"
    "Does the answer name exactly the class {label} (synonyms and plurals count, several classes do not)? "
    "Reply yes or no."
)

OPEN_SYSTEM = "You grade answers to questions about images. Reply with one word: yes or no."
OPEN_PROMPT = (
    "Question: {question}\nReference answer(s): {references}\nModel answer: \"{answer}\"\n"
    "Does the model answer mean the same as a reference answer? Reply yes or no."
)


@dataclass
class Verdict:
    correct: bool | None
    """None when the judge could not give a verdict"""
    error: str | None = None
    reply: str | None = None


def parse_verdict(reply: str) -> bool | None:
    """True for a reply starting with yes, False for no, None otherwise."""
    m = re.match(r"\W*(yes|no)\b", reply.strip().lower())
    return None if m is None else m.group(1) == "yes"


class LLMJudge:
    def __init__(self, client: ChatClient, unclear_retries: int = 1):
        self.client = client
        self.unclear_retries = unclear_retries

    def judge(self, answer: str, label: str, class_names: list[str]) -> Verdict:
        """EMT: does `answer` name exactly the class `label` among `class_names`?"""
        return self._ask([{"role": "system", "content": JUDGE_SYSTEM},
                          {"role": "user", "content": JUDGE_PROMPT.format(label=label, classes=", ".join(class_names),
                                                                          answer=answer.replace('"', "'"))}])

    def judge_open(self, question: str, answer: str, references: list[str]) -> Verdict:
        """Instruction tasks: is `answer` to `question` correct, given the reference answers?"""
        return self._ask([{"role": "system", "content": OPEN_SYSTEM},
                          {"role": "user", "content": OPEN_PROMPT.format(
                              question=question, references=" | ".join(references), answer=answer.replace('"', "'"))}])

    def _ask(self, messages: list[dict]) -> Verdict:
        reply = None
        for attempt in range(self.unclear_retries + 1):
            try:
                reply = self.client.chat(messages, use_cache=attempt == 0, max_tokens=3)
            except EndpointDown:
                raise
            except LMError as e:
                return Verdict(None, error=str(e))
            verdict = parse_verdict(reply)
            if verdict is not None:
                return Verdict(verdict, reply=reply)
        return Verdict(None, error=f"the judge replied {reply!r}, neither yes nor no", reply=reply)

    def judge_many(self, items: list[tuple[str, str]], class_names: list[str]) -> list[Verdict]:
        """Verdicts for (answer, label name) pairs, one per item, failures included."""
        return [self.judge(answer, label, class_names) for answer, label in items]
