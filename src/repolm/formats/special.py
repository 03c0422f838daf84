"""repolm's special tokens: one table that the tokenizer, the dataset builder and the model share.

Pure data (no heavy imports), so every stage can import it cheaply.
"""

from __future__ import annotations

ENDOFTEXT = "<|endoftext|>"  # bos and eos
PAD = "<|pad|>"

UNK = "<|unk|>"  # only for models that need one (unigram); byte-level BPE never emits it

# What chunk.labels labels a change with; each has its own token.
CHANGE_TYPES = (
    "new_function",
    "modified_function",
    "deleted_function",
    "new_test",
    "modified_test",
    "deleted_test",
    "new_type",
    "modified_type",
    "deleted_type",
    "docs",
    "config",
    "build",
    "other",
)

COMMIT, COMMIT_END = "<|commit|>", "<|/commit|>"
AUTHOR, DATE, MESSAGE = "<|author|>", "<|date|>", "<|message|>"
FILE, MODULE = "<|file|>", "<|module|>"
HUNK, HUNK_END = "<|hunk|>", "<|/hunk|>"
FIM_PREFIX, FIM_MIDDLE, FIM_SUFFIX, FIM_PAD = (
    "<|fim_prefix|>",
    "<|fim_middle|>",
    "<|fim_suffix|>",
    "<|fim_pad|>",
)

# What repolm writes about a model it trained, in the model's config.json under this key
# (transformers keeps unknown config keys): {"fim": whether it trained on FIM samples}.
MODEL_INFO = "repolm"


def change_token(change_type: str) -> str:
    """The token that labels a change of this type, e.g. `<|change:new_function|>`."""
    if change_type not in CHANGE_TYPES:
        raise ValueError(f"unknown change type {change_type!r}")
    return f"<|change:{change_type}|>"


# Order is part of the format: a trained tokenizer gives these the first ids, in this order.
SPECIAL_TOKENS: tuple[str, ...] = (
    ENDOFTEXT,
    PAD,
    COMMIT,
    COMMIT_END,
    AUTHOR,
    DATE,
    MESSAGE,
    FILE,
    MODULE,
    HUNK,
    HUNK_END,
    *(f"<|change:{t}|>" for t in CHANGE_TYPES),
    FIM_PREFIX,
    FIM_MIDDLE,
    FIM_SUFFIX,
    FIM_PAD,
)
