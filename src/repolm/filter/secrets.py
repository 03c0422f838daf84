"""Secrets and PII scrubbing: every credential, email address and public IP address in a text is
replaced by a typed placeholder (`<SECRET:github_token>`, `<EMAIL>`, `<IP>`).

    text, counts = scrub_text(patch)     # counts: Counter({"aws_access_key": 1, "email": 2})

Works on whole files and on unified diffs alike. Three passes, in order of cost:

1. precise formats (`patterns.TOKEN_PATTERNS`, PEM/PuTTY blocks, WIF keys, emails, IPs): compiled
   regexes over the whole text, each starting with a literal so that `re` skips ahead fast;
2. key-value assignments, on the few lines where a key-ish word meets `=`/`:` (our own parser for
   exact spans, then detect-secrets' KeywordDetector for syntaxes it knows and we don't), and
   values on the line below a key alone on its line (YAML, INI continuations, JSON);
3. detect-secrets' high-entropy plugins on those same lines, for long random strings near a key.

A key right after a path segment (`one/pass:word`) is no assignment. `suspect_lines` tells,
line by line, which lines can take part in a finding at all: the filter stage scrubs only the
texts that hold one (`repolm.filter.batch`).

The whole-text passes run on the UTF-8 bytes (`re` on a str holding any non-ASCII character is
~10x slower); every pattern is ASCII, so every span starts and ends on a character boundary.
Overlapping findings keep the most specific one. Values found are never logged, returned or
kept: only spans and type names leave this module. detect-secrets is used through its plugins'
`analyze_string`, which reads no settings, files or network (verification lives in
`analyze_line`, never called here), so its global settings object is left untouched.

IP addresses kept as they are: loopback, unspecified, private (RFC 1918, ULA), link-local,
multicast, reserved and documentation ranges, netmasks, well-known public resolvers (8.8.8.8,
1.1.1.1, ...), and dotted quads in a version context (`version = "1.2.3.4"`, `v1.2.3.4`).
Emails kept: RFC 2606 domains (example.com, .test, .invalid, .localhost) and `git@` remotes.
"""

from __future__ import annotations

import bisect
import hashlib
import ipaddress
import math
import re
from collections import Counter
from collections.abc import Callable, Collection, Iterable
from functools import partial
from typing import NamedTuple

from repolm.filter import patterns as P

__all__ = ["Scrubber", "scrub_text"]

# When findings overlap, the higher priority one is kept whole: the most specific first.
PRIORITY = {
    "private_key": 100,
    "crypto_private_key": 95,
    "basic_auth_url": 80,
    "aws_secret_key": 78,
    "bearer_token": 70,
    "password": 60,
    "high_entropy": 50,
    "email": 40,
    "ip": 30,
}
TOKEN_PRIORITY = 90  # every other type of patterns.TOKEN_PATTERNS
_UTF8_CONTINUATION = bytes(range(0x80, 0xC0))
_GLOBAL_UNICAST = ipaddress.IPv6Network("2000::/3")


class Finding(NamedTuple):
    """A span of UTF-8 bytes and its type: never the value."""

    start: int
    end: int
    type: str


def placeholder(type_: str) -> str:
    if type_ == "email":
        return "<EMAIL>"
    if type_ == "ip":
        return "<IP>"
    return f"<SECRET:{type_}>"


class _Spans:
    """Accepted findings: disjoint intervals in order; the first to claim a byte keeps it."""

    def __init__(self) -> None:
        self.starts: list[int] = []
        self.items: list[Finding] = []

    def overlaps(self, start: int, end: int) -> bool:
        i = bisect.bisect_right(self.starts, start)
        if i and self.items[i - 1].end > start:
            return True
        return i < len(self.items) and self.items[i].start < end

    def add_all(self, findings: list[Finding]) -> None:
        for f in sorted(findings, key=lambda f: (-PRIORITY.get(f.type, TOKEN_PRIORITY), f.start)):
            if f.start < f.end and not self.overlaps(f.start, f.end):
                i = bisect.bisect_right(self.starts, f.start)
                self.starts.insert(i, f.start)
                self.items.insert(i, f)


class Scrubber:
    """Finds credentials and PII in text and replaces them with typed placeholders.

    `emails`/`ips` turn the PII passes on or off, `entropy` the high-entropy-string pass.
    Safe to share between threads: calls keep no state on the instance.
    """

    def __init__(self, *, emails: bool = True, ips: bool = True, entropy: bool = True) -> None:
        self.emails = emails
        self.ips = ips
        self.entropy = entropy
        # Imported here: detect-secrets pulls in `requests`, too heavy for `repolm --help`.
        from detect_secrets.filters import heuristic
        from detect_secrets.plugins import keyword
        from detect_secrets.plugins.high_entropy_strings import (
            Base64HighEntropyString,
            HexHighEntropyString,
        )

        self._keyword = keyword.KeywordDetector()
        self._keyword_regexes = (
            keyword.QUOTES_REQUIRED_DENYLIST_REGEX_TO_GROUP,
            keyword.C_PLUS_PLUS_REGEX_TO_GROUP,
        )
        self._entropy_plugins = (HexHighEntropyString(), Base64HighEntropyString())
        self._heuristic = heuristic
        # Where findings start: (regex, whether it runs on the lower-cased text, whether a line
        # with a match has a finding when taken alone). `_find` makes no finding that does not
        # start from a match of one of these regexes; `suspect_lines` relies on it.
        self._triggers: list[tuple[re.Pattern[bytes], bool, Callable[[bytes], bool]]] = [
            *((pat.regex, False, partial(_has_token, pat)) for pat in P.TOKEN_PATTERNS),
            *((regex, False, _has_wif_key) for regex in P.WIF_CANDIDATES),
            (P.PEM_BEGIN, False, _opens_block),
            (P.PEM_BEGIN_TAIL, False, _opens_block),
            (P.PUTTY_START, False, _opens_block),
            (P.FLAG_ASSIGNMENT_BYTES, False, self._has_assignment),
            *((regex, True, self._has_assignment) for regex in P.FLAG_TAILS),
            *((regex, True, self._has_assignment) for regex in P.CANDIDATE_LINE),
        ]
        if emails:
            self._triggers.append((P.EMAIL_DOMAIN, False, _has_email))
        if ips:
            self._triggers += [
                (regex, False, _has_ip) for regex in (P.IPV4_TAIL, *P.IPV6_CANDIDATES)
            ]

    def scrub(self, text: str) -> tuple[str, Counter[str]]:
        """Return text with every finding replaced by a typed placeholder, and counts by type.
        Never log, return or store a secret's value."""
        data = text.encode("utf-8", "surrogatepass")
        findings = self._find(data)
        counts: Counter[str] = Counter(f.type for f in findings)
        if not findings:
            return text, counts
        ascii_only = len(data) == len(text)
        out: list[str] = []
        pos = char_pos = 0  # consumed so far: bytes of data, characters of text
        for f in findings:
            if ascii_only:
                start, end = f.start, f.end
            else:
                start = char_pos + _chars(data, pos, f.start)
                end = start + _chars(data, f.start, f.end)
            out.append(text[char_pos:start])
            out.append(placeholder(f.type))
            pos, char_pos = f.end, end
        out.append(text[char_pos:])
        return "".join(out), counts

    def suspect_lines(self, lines: Iterable[str]) -> set[str]:
        """The lines, of `lines`, that can take part in a finding in some text: a text none of
        whose lines (split on "\n") is suspect scrubs to itself with no findings.

        Why that holds: every finding `_find` makes starts from a match of one of its trigger
        regexes, and those can match no "\n" (`tests/test_filter_secrets.py` checks their
        syntax trees), so each match lies in one line and is found in that line taken alone.
        What follows a match reads only its line, except what can only drop a finding (the
        version context before an IP address, overlaps) and the formats that go on over later
        lines, whose first line always counts as suspect (`_opens_block`). So a line that has no
        finding when taken alone and opens no block takes part in no finding of any text.

        Done in two steps, so that callers can keep the first one's results: `line_triggers`
        scans the lines' contents (`line_content`) together, one pass per trigger regex, and
        `is_suspect` checks a line with the finders of the triggers its content matched."""
        lines = set(lines)
        hits = self.line_triggers({line_content(line) for line in lines})
        return {line for line in lines if self.is_suspect(line, hits.get(line_content(line), ()))}

    def line_triggers(self, contents: Collection[str]) -> dict[str, tuple[int, ...]]:
        """The trigger regexes (indices into `_triggers`) that match each of `contents`, for
        those that some trigger matches."""
        if not contents:
            return {}
        data = "\n".join(contents).encode("utf-8", "surrogatepass")
        lowered = data.lower()
        found: dict[int, list[int]] = {}  # a line's start in data -> its triggers
        for i, (regex, lower, _) in enumerate(self._triggers):
            for m in regex.finditer(lowered if lower else data):
                triggers = found.setdefault(data.rfind(b"\n", 0, m.start()) + 1, [])
                if not triggers or triggers[-1] != i:
                    triggers.append(i)
        hits = {}
        for start, triggers in found.items():
            end = data.find(b"\n", start)
            line = data[start : len(data) if end < 0 else end].decode("utf-8", "surrogatepass")
            hits[line] = tuple(triggers)
        return hits

    def is_suspect(self, line: str, triggers: Iterable[int]) -> bool:
        """Whether `line` has a finding when taken alone, or opens a block, given the triggers
        its content matched (`line_triggers`). A trigger match in the line is one in its content:
        no trigger looks behind its match (`\b` sees a blank, + or - as a line's start) and none
        can start with a blank or +; the two that can start with - (`--password`,
        `-----BEGIN`) have what follows their dashes as triggers of their own (the tests check
        all three)."""
        data = line.encode("utf-8", "surrogatepass")
        return any(has_finding(data) for has_finding in {self._triggers[i][2] for i in triggers})

    # -- finding --------------------------------------------------------------------------------

    def _find(self, data: bytes) -> list[Finding]:
        """All findings in UTF-8 `data`: disjoint, in order."""
        found = _private_keys(data)
        for pat in P.TOKEN_PATTERNS:
            found += _tokens(data, pat)
        found += _wif_keys(data)
        if self.emails:
            found += _emails(data)
        if self.ips:
            found += _ipv4s(data) + _ipv6s(data)
        spans = _Spans()
        spans.add_all(found)
        # Key-value findings come after the precise ones and never split them.
        for start, end in _candidate_lines(data):
            spans.add_all(self._scan_line(data, start, end))
            spans.add_all(self._value_below(data, start, end))
        return spans.items

    def _value_below(self, data: bytes, start: int, end: int) -> list[Finding]:
        """The value of a key alone on the line data[start:end] (`_key_alone`), when the next
        line holds it alone: YAML (a scalar more indented than the key, the value's only line;
        a block scalar `|` or `>` of one line), INI (`key =` and an indented continuation line)
        or JSON (`"key":` and a string). It is judged as it would be on the key's line."""
        key_line = data[start:end].decode("utf-8", "surrogatepass")
        key = _key_alone(key_line)
        if key is None or end >= len(data):
            return []
        lines = _next_lines(data, end + 1, 2)  # the value line and the one after it
        # A diff's +/- (or a YAML sequence dash) before the key: one column off every line.
        strip = 1 if key_line[:1] in ("+", "-") else 0
        value_line = lines[0].decode("utf-8", "surrogatepass")[strip:]
        m = P.VALUE_BELOW.fullmatch(value_line)
        if m is None:
            return []
        group = next(g for g in ("dq", "sq", "uq") if m.group(g) is not None)
        value, column = m.group(group), len(key.group("lead"))
        if key.group("q") == '"' and key.group("colon"):
            if group != "dq":  # JSON: a string, on a line of any indentation
                return []
        elif key.group("q") and key.group("equals"):
            return []
        elif len(m.group("indent")) <= column or value.endswith(":"):
            return []  # YAML, INI: no value, or a mapping below the key
        elif len(lines) > 1:
            after = lines[1].decode("utf-8", "surrogatepass")[strip:]
            if after.strip() and len(after) - len(after.lstrip(" \t")) > column:
                return []  # a value of several lines: prose, a list, a certificate
        op = key.group("colon") or key.group("equals")
        type_ = _classify_value(
            key.group("key"), op, value, group != "uq", value_line, m.end(group)
        )
        if type_ is None or (type_ == "high_entropy" and not self.entropy):
            return []
        enc = _utf8_offsets(value_line)
        offset = end + 1 + len(lines[0][:strip])
        return [Finding(offset + enc(m.start(group)), offset + enc(m.end(group)), type_)]

    def _has_assignment(self, line: bytes) -> bool:
        """Whether one line alone holds a key-value finding, or is a key whose value is below."""
        if _key_alone(line.decode("utf-8", "surrogatepass")) is not None:
            return True
        return bool(self._scan_line(line, 0, len(line)))

    def _scan_line(self, data: bytes, start: int, end: int) -> list[Finding]:
        line = data[start:end].decode("utf-8", "surrogatepass")
        found: list[tuple[int, int, str]] = []  # character offsets in `line`
        parsed: list[tuple[int, int]] = []  # value spans our parser judged, either way
        for m in P.ASSIGNMENT.finditer(line):
            group = next(g for g in ("dq", "sq", "bq", "uq") if m.group(g) is not None)
            parsed.append(m.span(group))
            type_ = _classify(m, group, line)
            if type_ and (type_ != "high_entropy" or self.entropy):
                found.append((*m.span(group), type_))
        if "=" in line and ("?" in line or "&" in line):
            for m in P.QUERY_PARAM.finditer(line):
                value = m.group("value")
                if (
                    len(value) >= 4
                    and _credential_key(m.group("key"))
                    and not _is_placeholder(value)
                    and not P.SCRUBBED.search(value)
                ):
                    found.append((*m.span("value"), "password"))
        for m in P.XML_ELEMENT.finditer(line):
            if not _is_placeholder(m.group(2)) and _credential_key(m.group(1)):
                found.append((*m.span(2), "password"))
        for m in P.FLAG_ASSIGNMENT.finditer(line):
            g = next(i for i in (1, 2, 3) if m.group(i) is not None)
            if not _is_placeholder(m.group(g)) and not P.REFERENCE.fullmatch(m.group(g)):
                found.append((*m.span(g), "password"))
        found += self._detect_secrets_keyword(line, parsed)
        if self.entropy and P.LONG_QUOTED.search(line):
            found += self._high_entropy(line)
        if line.isascii():
            return [Finding(start + s, start + e, t) for s, e, t in found]
        enc = _utf8_offsets(line)
        return [Finding(start + enc(s), start + enc(e), t) for s, e, t in found]

    def _detect_secrets_keyword(
        self, line: str, parsed: list[tuple[int, int]]
    ) -> list[tuple[int, int, str]]:
        """Values detect-secrets' keyword plugin finds where our parser saw no assignment."""
        found: list[tuple[int, int, str]] = []
        if not ('"' in line or "'" in line) or not P.DETECT_SECRETS_WORDS.search(line):
            return found
        for regexes in self._keyword_regexes:
            for value in self._keyword.analyze_string(line, regexes):
                if len(value) < 4 or _is_placeholder(value) or P.SCRUBBED.search(value):
                    continue
                h = self._heuristic
                if h.is_templated_secret(value) or h.is_indirect_reference(line):
                    continue
                for m in re.finditer(re.escape(value), line):
                    s, e = m.span()
                    if not any(ps < e and s < pe for ps, pe in parsed):
                        found.append((s, e, "password"))
        return found

    def _high_entropy(self, line: str) -> list[tuple[int, int, str]]:
        """Long quoted random strings (detect-secrets' entropy limits) on a key-ish line."""
        found = []
        h = self._heuristic
        for plugin in self._entropy_plugins:
            for value in plugin.analyze_string(line):
                if len(value) < 20 or _is_hash_like(value, line):
                    continue
                if plugin.calculate_shannon_entropy(value) <= plugin.entropy_limit:
                    continue
                if h.is_potential_uuid(value) or h.is_sequential_string(value):
                    continue
                for m in re.finditer(re.escape(value), line):
                    found.append((*m.span(), "high_entropy"))
        return found


def _is_word_byte(b: int) -> bool:
    return b == 0x5F or 0x30 <= b <= 0x39 or 0x41 <= b <= 0x5A or 0x61 <= b <= 0x7A


def _chars(data: bytes, start: int, end: int) -> int:
    """Characters in data[start:end] (UTF-8): the bytes that are not continuation bytes."""
    return len(data[start:end].translate(None, _UTF8_CONTINUATION))


def _utf8_offsets(line: str) -> Callable[[int], int]:
    """Character offset in `line` -> byte offset in its UTF-8 encoding."""
    return lambda i: len(line[:i].encode("utf-8", "surrogatepass"))


LINE_PREFIX = " \t+-"  # what `line_content` leaves out


def line_content(line: str) -> str:
    """What trigger regexes are run on for `line`: without its leading blanks and a diff's +
    or -, so that a line shared by versions, patches and units at any indentation is scanned
    once."""
    return line.lstrip(LINE_PREFIX)


def _tokens(data: bytes, pat: P.TokenPattern) -> list[Finding]:
    found = []
    for m in pat.regex.finditer(data):
        s, e = m.span(pat.group)
        if pat.boundary and s and _is_word_byte(data[s - 1]):
            continue
        if pat.group and _is_placeholder(data[s:e].decode("utf-8", "replace")):
            continue
        found.append(Finding(s, e, pat.type))
    return found


def _has_token(pat: P.TokenPattern, line: bytes) -> bool:
    return bool(_tokens(line, pat))


def _has_wif_key(line: bytes) -> bool:
    return bool(_wif_keys(line))


def _has_email(line: bytes) -> bool:
    return bool(_emails(line))


def _has_ip(line: bytes) -> bool:
    return bool(_ipv4s(line) or _ipv6s(line))


def _opens_block(line: bytes) -> bool:
    """Whether `line` can start a finding that ends on a later line: a PEM or PuTTY key."""
    return bool(P.PEM_BEGIN.search(line) or P.PUTTY_START.search(line))


# -- key-value classification ---------------------------------------------------------------


def _key_words(key: str) -> list[str]:
    """`DB_PASSWORD_PROD` -> ["db", "password"]: lower-case words, trailing qualifiers dropped."""
    words = [w.lower() for w in P.KEY_WORDS.findall(key)]
    while len(words) > 1 and (words[-1] in P.TRAILING_QUALIFIERS or words[-1].isdigit()):
        words.pop()
    return words


def _credential_key(key: str) -> bool:
    words = _key_words(key)
    if not words:
        return False
    last = words[-1]
    if P.CREDENTIAL_WORD.fullmatch(last):
        return True
    return last in ("key", "keys") and len(words) > 1 and words[-2] in P.KEY_PREFIX_WORDS


def _classify(m: re.Match[str], group: str, line: str) -> str | None:
    """The finding type of one `key op value` match, or None when the value is no secret."""
    return _classify_value(
        m.group("key"), m.group("op"), m.group(group), group != "uq", line, m.end(group)
    )


def _classify_value(key: str, op: str, value: str, quoted: bool, line: str, end: int) -> str | None:
    """The finding type of `value` assigned to `key` with `op`, or None when it is no secret;
    `end` is where the value ends in `line`, the line it is on."""
    if op in ("==", "!=", "===", "!==") and not quoted:
        return None
    if _is_placeholder(value) or P.SCRUBBED.search(value):
        return None
    words = _key_words(key)
    if not words:
        return None
    if _is_crypto_key(words, value):
        return "crypto_private_key"
    if _credential_key(key):
        if not quoted and _is_code(value, op, line, end, key):
            return None
        return "password" if _looks_literal(value, words, quoted) else None
    if P.ENTROPY_CONTEXT.search(key) and _is_high_entropy(value, line):
        return "high_entropy"
    return None


def _key_alone(line: str) -> re.Match[str] | None:
    """`line` (a diff's +/- left out) as a key with no value, of a name that can hold a secret."""
    m = P.KEY_ALONE.fullmatch(line[1:] if line[:1] in ("+", "-") else line)
    if m is None:
        return None
    key = m.group("key")
    return m if _credential_key(key) or P.ENTROPY_CONTEXT.search(key) else None


def _next_lines(data: bytes, start: int, n: int) -> list[bytes]:
    """Up to `n` lines of `data` from offset `start` (the start of a line)."""
    lines = []
    while len(lines) < n and start <= len(data):
        end = data.find(b"\n", start)
        end = len(data) if end < 0 else end
        lines.append(data[start:end])
        start = end + 1
    return lines


def _is_crypto_key(words: list[str], value: str) -> bool:
    """A 64-hex value (Ethereum-style) or a BIP-39 phrase assigned to a private-key-like name."""
    if not (P.HEX64.fullmatch(value) or P.MNEMONIC.fullmatch(value)):
        return False
    if any(w in P.CRYPTO_EXCLUDE_WORDS for w in words):
        return False
    joined = "".join(words)
    return words[-1] in P.CRYPTO_KEY_WORDS or "priv" in joined or "secret" in joined


def _is_code(value: str, op: str, line: str, end: int, key: str) -> bool:
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


def _looks_literal(value: str, words: list[str], quoted: bool) -> bool:
    """A credential-key value that can be a secret: long enough, not prose, path or URL."""
    v = value.strip()
    if len(v) < 4 or P.URL_LIKE.fullmatch(v) or P.PATH_LIKE.fullmatch(v):
        return False
    if " " in v and not P.PASSWORD_WORD.fullmatch(words[-1]):
        return False  # `token_help = "Paste your token here"`
    return len(v.split()) <= 3  # a sentence, even next to a password key


def _is_hash_like(value: str, line: str) -> bool:
    """Lock-file integrity hashes, and hex digests in a sha/commit/hash context."""
    if value.startswith(("sha1-", "sha256-", "sha384-", "sha512-", "md5-")):
        return True
    is_hex = all(c in "0123456789abcdefABCDEF" for c in value)
    return is_hex and len(value) in (32, 40, 64, 128) and bool(P.SHA_CONTEXT.search(line))


def _is_high_entropy(value: str, line: str) -> bool:
    """detect-secrets' Shannon-entropy limits (hex > 3.0, base64 > 4.5) on 20+ characters."""
    if len(value) < 20 or _is_hash_like(value, line) or not P.BASE64ISH.fullmatch(value):
        return False
    hexy = all(c in "0123456789abcdefABCDEF" for c in value)
    n = len(value)
    entropy = -sum(c / n * math.log2(c / n) for c in Counter(value).values())
    return entropy > (3.0 if hexy else 4.5)


def _is_placeholder(value: str) -> bool:
    v = value.strip().strip("\"'")
    return not v or bool(P.PLACEHOLDER.fullmatch(v)) or bool(P.SCRUBBED.fullmatch(v))


def _candidate_lines(data: bytes) -> list[tuple[int, int]]:
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


# -- precise multi-line and validated formats -------------------------------------------------


def _private_keys(data: bytes) -> list[Finding]:
    """PEM blocks BEGIN..END (or cut short by a hunk's end) and PuTTY key files, whole."""
    found = []
    pos = 0
    while m := P.PEM_BEGIN.search(data, pos):
        end_m = P.PEM_BODY_TO_END.match(data, m.end())
        body = end_m or P.PEM_TRUNCATED_BODY.match(data, m.end())
        if body and (end_m or re.search(rb"[A-Za-z0-9+/]{40}", body.group())):
            found.append(Finding(m.start(), body.end(), "private_key"))
            pos = body.end()
        else:
            pos = m.end()  # the markers alone, in code that handles keys
    found += [Finding(*m.span(), "private_key") for m in P.PUTTY_KEY.finditer(data)]
    return found


def _base58check_payload(s: bytes) -> bytes | None:
    n = 0
    for c in s:
        n = n * 58 + P.BASE58_ALPHABET.index(chr(c))
    raw = b"\0" * (len(s) - len(s.lstrip(b"1"))) + n.to_bytes((n.bit_length() + 7) // 8, "big")
    payload, check = raw[:-4], raw[-4:]
    if len(raw) < 5 or hashlib.sha256(hashlib.sha256(payload).digest()).digest()[:4] != check:
        return None
    return payload


def _wif_keys(data: bytes) -> list[Finding]:
    """Bitcoin WIF private keys: base58check with version 0x80 (validated, so no guesswork)."""
    found = []
    for regex in P.WIF_CANDIDATES:
        for m in regex.finditer(data):
            if m.start() and data[m.start() - 1] in P.BASE58_CHARS:
                continue
            payload = _base58check_payload(m.group())
            if payload and payload[0] == 0x80 and len(payload) in (33, 34):
                found.append(Finding(*m.span(), "crypto_private_key"))
    return found


# -- PII ----------------------------------------------------------------------------------------


def _emails(data: bytes) -> list[Finding]:
    found = []
    for m in P.EMAIL_DOMAIN.finditer(data):
        at = m.start()
        local = P.EMAIL_LOCAL.search(data, max(0, at - 64), at)
        if not local or (local.start() == at - 64 and at > 64 and data[at - 65] in P.LOCAL_BYTES):
            continue  # no local part, or one longer than an address allows
        domain, tld = m.group(1).lower().decode(), m.group(2).lower().decode()
        if len(tld) > 2 and tld not in P.GTLDS:
            continue
        if tld in P.SAFE_EMAIL_TLDS or domain.endswith(P.SAFE_EMAIL_DOMAINS):
            continue
        if local.group().decode() in P.SAFE_EMAIL_LOCALS:
            continue
        found.append(Finding(local.start(), m.end(1), "email"))
    return found


def _ipv4s(data: bytes) -> list[Finding]:
    found = []
    for m in P.IPV4_TAIL.finditer(data):
        s = m.start()
        while s > m.start() - 3 and s and 0x30 <= data[s - 1] <= 0x39:
            s -= 1
        if s == m.start() or (s and (_is_word_byte(data[s - 1]) or data[s - 1] == 0x2E)):
            continue
        ip = data[s : m.end()].decode()
        try:
            addr = ipaddress.IPv4Address(ip)
        except ValueError:
            continue  # an octet over 255, or a leading zero
        if ip in P.KEEP_IPV4 or ip.startswith("255.") or not addr.is_global or addr.is_multicast:
            continue
        if P.VERSION_BEFORE.search(data, max(0, s - 24), s):
            continue
        found.append(Finding(s, m.end(), "ip"))
    return found


def _ipv6s(data: bytes) -> list[Finding]:
    """Global unicast IPv6 (2000::/3) only: other shapes are code (`a::b`), times or MACs."""
    found = []
    for regex in P.IPV6_CANDIDATES:
        for m in regex.finditer(data):
            s, e = m.span()
            if s and (_is_word_byte(data[s - 1]) or data[s - 1] in b":."):
                continue
            if e < len(data) and (_is_word_byte(data[e]) or data[e] == 0x3A):
                continue
            try:
                addr = ipaddress.IPv6Address(data[s:e].decode())
            except ValueError:
                continue
            if addr in _GLOBAL_UNICAST and addr.is_global:
                found.append(Finding(s, e, "ip"))
    return sorted(found)


_default: Scrubber | None = None


def scrub_text(text: str) -> tuple[str, Counter[str]]:
    """`Scrubber().scrub(text)` with a module-level default Scrubber."""
    global _default
    if _default is None:
        _default = Scrubber()
    return _default.scrub(text)
