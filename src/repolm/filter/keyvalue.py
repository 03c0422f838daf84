"""Key-value classification for `repolm.filter.secrets`' second and third passes: whether a
value assigned to a key (`DB_PASSWORD = "..."`, `token: ...`) can be a secret, and which lines
hold a key-ish word before an assignment at all.
"""

from __future__ import annotations

import math
import re
from collections import Counter

from repolm.filter import patterns as P


def key_words(key: str) -> list[str]:
    """`DB_PASSWORD_PROD` -> ["db", "password"]: lower-case words, trailing qualifiers dropped."""
    words = [w.lower() for w in P.KEY_WORDS.findall(key)]
    while len(words) > 1 and (words[-1] in P.TRAILING_QUALIFIERS or words[-1].isdigit()):
        words.pop()
    return words


def credential_key(key: str) -> bool:
    words = key_words(key)
    if not words:
        return False
    last = words[-1]
    if P.CREDENTIAL_WORD.fullmatch(last):
        return True
    return last in ("key", "keys") and len(words) > 1 and words[-2] in P.KEY_PREFIX_WORDS


def classify(m: re.Match[str], group: str, line: str) -> str | None:
    """The finding type of one `key op value` match, or None when the value is no secret."""
    return classify_value(
        m.group("key"), m.group("op"), m.group(group), group != "uq", line, m.end(group)
    )


def classify_value(key: str, op: str, value: str, quoted: bool, line: str, end: int) -> str | None:
    """The finding type of `value` assigned to `key` with `op`, or None when it is no secret;
    `end` is where the value ends in `line`, the line it is on."""
    if op in ("==", "!=", "===", "!==") and not quoted:
        return None
    if is_placeholder(value) or P.SCRUBBED.search(value):
        return None
    words = key_words(key)
    if not words:
        return None
    if is_crypto_key(words, value):
        return "crypto_private_key"
    if credential_key(key):
        if not quoted and is_code(value, op, line, end, key):
            return None
        return "password" if looks_literal(value, words, quoted) else None
    if P.ENTROPY_CONTEXT.search(key) and is_high_entropy(value, line):
        return "high_entropy"
    return None


def key_alone(line: str) -> re.Match[str] | None:
    """`line` (a diff's +/- left out) as a key with no value, of a name that can hold a secret."""
    m = P.KEY_ALONE.fullmatch(line[1:] if line[:1] in ("+", "-") else line)
    if m is None:
        return None
    key = m.group("key")
    return m if credential_key(key) or P.ENTROPY_CONTEXT.search(key) else None


def next_lines(data: bytes, start: int, n: int) -> list[bytes]:
    """Up to `n` lines of `data` from offset `start` (the start of a line)."""
    lines = []
    while len(lines) < n and start <= len(data):
        end = data.find(b"\n", start)
        end = len(data) if end < 0 else end
        lines.append(data[start:end])
        start = end + 1
    return lines


def is_crypto_key(words: list[str], value: str) -> bool:
    """A 64-hex value (Ethereum-style) or a BIP-39 phrase assigned to a private-key-like name."""
    if not (P.HEX64.fullmatch(value) or P.MNEMONIC.fullmatch(value)):
        return False
    if any(w in P.CRYPTO_EXCLUDE_WORDS for w in words):
        return False
    joined = "".join(words)
    return words[-1] in P.CRYPTO_KEY_WORDS or "priv" in joined or "secret" in joined


def is_code(value: str, op: str, line: str, end: int, key: str) -> bool:
    """An unquoted value that is an expression, a reference or a type, not a literal."""
    if value[0] in "<$%{&*@!|>[(?" or value in P.TYPE_NAMES:
        return True
    if not key.isupper() and any(c in value for c in "<>|&(){}[]"):
        return True  # `Option<&'a T>`, `|token: Token|`: generics and closures
    after = line[end : end + 1]
    if after in ("(", "[", "<", "{") or "(" in value or "[" in value:
        return True
    if P.REFERENCE.fullmatch(value) or (value.isdigit() and len(value) < 8):
        return True
    if op == ":":
        # `password: String,` (a Rust/TS field), `password: SecretStr` (a Python annotation);
        # `password: hunter2` (YAML) is a literal.
        return after in (",", ";", ")") or (
            value[0].isupper() and value.isidentifier() and not after
        )
    if value.isidentifier() and not key.isupper():
        # `password = user_password`, `token = tok`: a name. Env-style keys (`DB_PASSWORD=x`)
        # keep plain words as literals; elsewhere a literal word needs a digit.
        return not any(c.isdigit() for c in value)
    return False


def looks_literal(value: str, words: list[str], quoted: bool) -> bool:
    """A credential-key value that can be a secret: long enough, not prose, path or URL."""
    v = value.strip()
    if len(v) < 4 or P.URL_LIKE.fullmatch(v) or P.PATH_LIKE.fullmatch(v):
        return False
    if " " in v and not P.PASSWORD_WORD.fullmatch(words[-1]):
        return False  # `token_help = "Paste your token here"`
    return len(v.split()) <= 3  # a sentence, even next to a password key


def is_hash_like(value: str, line: str) -> bool:
    """Lock-file integrity hashes, and hex digests in a sha/commit/hash context."""
    if value.startswith(("sha1-", "sha256-", "sha384-", "sha512-", "md5-")):
        return True
    is_hex = all(c in "0123456789abcdefABCDEF" for c in value)
    return is_hex and len(value) in (32, 40, 64, 128) and bool(P.SHA_CONTEXT.search(line))


def is_high_entropy(value: str, line: str) -> bool:
    """detect-secrets' Shannon-entropy limits (hex > 3.0, base64 > 4.5) on 20+ characters."""
    if len(value) < 20 or is_hash_like(value, line) or not P.BASE64ISH.fullmatch(value):
        return False
    hexy = all(c in "0123456789abcdefABCDEF" for c in value)
    n = len(value)
    entropy = -sum(c / n * math.log2(c / n) for c in Counter(value).values())
    return entropy > (3.0 if hexy else 4.5)


def is_placeholder(value: str) -> bool:
    v = value.strip().strip("\"'")
    return not v or bool(P.PLACEHOLDER.fullmatch(v)) or bool(P.SCRUBBED.fullmatch(v))


def candidate_lines(data: bytes) -> list[tuple[int, int]]:
    """(start, end) of every line with a key-ish word before an assignment: in order, once."""
    lowered = data.lower()
    hits = [m.start() for regex in P.CANDIDATE_LINE for m in regex.finditer(lowered)]
    hits += [m.start() for m in P.FLAG_ASSIGNMENT_BYTES.finditer(data)]  # `--password x`
    lines = []
    last_end = -1
    for pos in sorted(hits):
        if pos < last_end:
            continue
        start = data.rfind(b"\n", 0, pos) + 1
        end = data.find(b"\n", pos)
        last_end = end = len(data) if end < 0 else end
        lines.append((start, end))
    return lines
