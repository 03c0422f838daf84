"""repolm's formats as a model's token ids, and back.

repolm's special tokens (`repolm.formats.special`) become single ids when the tokenizer has
them (a repolm model, or a base model whose tokenizer repolm extended) and stay text
otherwise. Text that merely spells a special token is always encoded as text, as the build
stage does. `LoadedModel.encode`, `.encode_segments` and `.decode` are these functions on the
model's own tokenizer; eval, training's samples and serving all encode through them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from repolm.formats.documents import Segment, Tok
from repolm.formats.special import SPECIAL_TOKENS


def special_ids(tokenizer: Any) -> dict[str, int]:
    """repolm's special tokens that the tokenizer's vocabulary has, with their ids."""
    vocab = tokenizer.get_vocab()
    return {t: vocab[t] for t in SPECIAL_TOKENS if t in vocab}


def encode_text(tokenizer: Any, text: str) -> list[int]:
    """Plain text: a special token's spelling stays text."""
    return tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"]


def encode_segments(
    tokenizer: Any, special: Mapping[str, int], segments: Sequence[Segment]
) -> list[int]:
    """A document or prompt in repolm's format: special tokens by id where `special` (the
    vocabulary's, `special_ids`) has them, spelled as text for a model that never saw them."""
    ids: list[int] = []
    for s in segments:
        if isinstance(s, Tok):
            if s.token in special:
                ids.append(special[s.token])
            else:
                ids += encode_text(tokenizer, s.token)
        elif s:
            ids += encode_text(tokenizer, s)
    return ids


def decode(tokenizer: Any, ids: Sequence[int]) -> str:
    """Token ids as text, special tokens spelled out."""
    return tokenizer.decode(list(ids), skip_special_tokens=False)
