"""What the server puts before the model: a completion's prompt (fill-in-the-middle with the
`suffix` where the model learned it), a chat's prompt (the model's chat template, or repolm's
question-and-answer format, the one its instruction pairs are trained in), and the tool calls
a chat answer holds in its template's format.
"""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

from repolm.formats.documents import fim_segments
from repolm.lm import LoadedModel

# A model without a chat template is prompted as repolm's instruction pairs are written:
# "Question: ...\nAnswer: ...", a system message first as plain text; the answer ends at the
# next question.
QA_TURN = "Question: {question}\nAnswer: "
QA_STOP = "\nQuestion:"

TOOL_OPEN = "<tool_call>"
_TOOL_CALL = re.compile(r"<tool_call>\s*(\{.*?\})\s*</tool_call>", re.S)


def completion_prompt(lm: LoadedModel, prompt: str, suffix: str | None) -> list[int]:
    """A completion's prompt ids: FIM when there is a suffix and the model learned FIM,
    the prompt continued otherwise."""
    if suffix is not None and lm.fim:
        return lm.encode_segments(fim_segments(prompt, "", suffix)[:-1])
    return lm.encode(prompt)


def chat_prompt(
    lm: LoadedModel, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None
) -> tuple[list[int], list[str]]:
    """A chat's prompt ids and the stop strings its format needs."""
    template = getattr(lm.tokenizer, "chat_template", None)
    if template:
        text = lm.tokenizer.apply_chat_template(
            messages, tools=tools or None, add_generation_prompt=True, tokenize=False
        )
        # the template's markers (<|im_start|>, ...) are special tokens, not text
        return lm.tokenizer.encode(text, add_special_tokens=False), []
    parts = []
    for m in messages:
        content = m.get("content") or ""
        if m["role"] == "system":
            parts.append(content.strip() + "\n\n")
        elif m["role"] == "user":
            parts.append(QA_TURN.format(question=content.strip()))
        else:
            parts.append(content.strip() + "\n")
    if not parts or messages[-1]["role"] != "user":
        parts.append(QA_TURN.format(question=""))
    return lm.encode("".join(parts)), [QA_STOP]


def tool_calls(text: str) -> tuple[str, list[dict[str, Any]]]:
    """The text without the tool calls it holds (`<tool_call>{"name", "arguments"}</tool_call>`,
    the Hermes/Qwen format chat templates use), and the calls in OpenAI's shape. Text that
    does not parse as a call stays text: a call is never invented."""
    calls = []
    for found in _TOOL_CALL.finditer(text):
        try:
            call = json.loads(found.group(1))
        except json.JSONDecodeError:
            continue
        if not isinstance(call, dict) or not isinstance(call.get("name"), str):
            continue
        arguments = call.get("arguments", {})
        calls.append(
            {
                "id": f"call_{uuid.uuid4().hex[:24]}",
                "type": "function",
                "function": {
                    "name": call["name"],
                    "arguments": arguments if isinstance(arguments, str) else json.dumps(arguments),
                },
            }
        )
    return (_TOOL_CALL.sub("", text).strip() if calls else text), calls


class ToolCallStream:
    """A streamed chat answer that may hold tool calls: `feed` returns the text that can go to
    the client now, holding back from the first `<tool_call>` (or what may yet become one);
    `end` returns the rest of the text and the calls it parsed into (`tool_calls`)."""

    def __init__(self) -> None:
        self.held = ""
        self.calling = False

    def feed(self, text: str) -> str:
        self.held += text
        if self.calling:
            return ""
        at = self.held.find(TOOL_OPEN)
        if at >= 0:
            self.calling = True
        else:  # the longest end of the text that starts a call
            at = next(
                (
                    len(self.held) - k
                    for k in range(len(TOOL_OPEN) - 1, 0, -1)
                    if self.held.endswith(TOOL_OPEN[:k])
                ),
                len(self.held),
            )
        sent, self.held = self.held[:at], self.held[at:]
        return sent

    def end(self) -> tuple[str, list[dict[str, Any]]]:
        text, calls = tool_calls(self.held)
        self.held = ""
        return text, calls
