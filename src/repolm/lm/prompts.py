"""Completion prompts at a cursor in a file, in the training formats and fitted to the model's
window: fill-in-the-middle (`FILE HEADER <|fim_prefix|>BEFORE<|fim_suffix|>AFTER<|fim_middle|>`)
for a model that learned repolm's FIM tokens (`LoadedModel.fim`), the same without the header
in a pretrained model's own FIM tokens (e.g. `<fim_prefix>`), the file document up to the
cursor for any other. The completion evaluation and `repolm complete` both prompt through here,
so what is measured is what users get.
"""

from __future__ import annotations

from repolm.formats import documents as dm
from repolm.lm.loading import LoadedModel


def fit_tail(lm: LoadedModel, text: str, budget: int) -> str:
    """The last whole lines of `text` that encode to at most `budget` tokens (at least its
    last line: a prompt still too long is cut from the left by `generate`)."""
    lines = text.splitlines(keepends=True)
    low, high = 0, max(len(lines) - 1, 0)  # how many lines to drop: the fewest that fit
    while low < high:
        mid = (low + high) // 2
        if len(lm.encode("".join(lines[mid:]))) <= budget:
            high = mid
        else:
            low = mid + 1
    return "".join(lines[low:])


def fit_head(lm: LoadedModel, text: str, budget: int) -> str:
    """The first whole lines of `text` that encode to at most `budget` tokens."""
    lines = text.splitlines(keepends=True)
    low, high = 0, len(lines)  # how many lines to keep: the most that fit
    while low < high:
        mid = (low + high + 1) // 2
        if len(lm.encode("".join(lines[:mid]))) <= budget:
            low = mid
        else:
            high = mid - 1
    return "".join(lines[:low])


def cursor_prompt(
    lm: LoadedModel,
    path: str,
    language: str | None,
    before: str,
    after: str,
    max_new: int,
    fim: bool | None = None,
) -> list[int]:
    """The prompt ids for completing at the cursor between `before` and `after` in the file at
    `path`, leaving `max_new` tokens of the window for the completion: FIM (`fim`, default
    `lm.fim`) keeps up to a quarter of the room for the code after the cursor. A plain prompt
    leaves the trailing whitespace of `before` for the model to write."""
    fim = lm.fim if fim is None else fim
    header = lm.encode_segments(dm.file_document_header(path, language))
    if fim and not lm.fim_header:
        header = []  # a pretrained model's own FIM format: its tokens, the code, nothing else
    room = lm.max_len - max_new - len(header)
    if not fim:
        return lm.encode_segments(dm.plain_prompt(path, language, fit_tail(lm, before, room)))
    tail = fit_head(lm, after, (room - 3) // 4)
    head = fit_tail(lm, before, room - 3 - len(lm.encode(tail)))
    if not header:
        return lm.encode_segments(dm.fim_segments(head, "", tail)[:-1])
    return lm.encode_segments(dm.fim_prompt(path, language, head, tail))
