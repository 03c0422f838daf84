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

The first pass's finders live in `precise.py`, the key-value rules in `keyvalue.py`, their
patterns in `patterns.py`; this module runs the passes and resolves overlaps.

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
import re
from collections import Counter
from collections.abc import Callable, Collection, Iterable
from functools import partial

from repolm.filter import patterns as P
from repolm.filter.keyvalue import (
    candidate_lines,
    classify,
    classify_value,
    credential_key,
    is_hash_like,
    is_placeholder,
    key_alone,
    next_lines,
)
from repolm.filter.precise import (
    Finding,
    emails,
    has_email,
    has_ip,
    has_token,
    has_wif_key,
    ipv4s,
    ipv6s,
    opens_block,
    private_keys,
    tokens,
    wif_keys,
)

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
            *((pat.regex, False, partial(has_token, pat)) for pat in P.TOKEN_PATTERNS),
            *((regex, False, has_wif_key) for regex in P.WIF_CANDIDATES),
            (P.PEM_BEGIN, False, opens_block),
            (P.PEM_BEGIN_TAIL, False, opens_block),
            (P.PUTTY_START, False, opens_block),
            (P.FLAG_ASSIGNMENT_BYTES, False, self._has_assignment),
            *((regex, True, self._has_assignment) for regex in P.FLAG_TAILS),
            *((regex, True, self._has_assignment) for regex in P.CANDIDATE_LINE),
        ]
        if emails:
            self._triggers.append((P.EMAIL_DOMAIN, False, has_email))
        if ips:
            self._triggers += [
                (regex, False, has_ip) for regex in (P.IPV4_TAIL, *P.IPV6_CANDIDATES)
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
        lines, whose first line always counts as suspect (`opens_block`). So a line that has no
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
        found = private_keys(data)
        for pat in P.TOKEN_PATTERNS:
            found += tokens(data, pat)
        found += wif_keys(data)
        if self.emails:
            found += emails(data)
        if self.ips:
            found += ipv4s(data) + ipv6s(data)
        spans = _Spans()
        spans.add_all(found)
        # Key-value findings come after the precise ones and never split them.
        for start, end in candidate_lines(data):
            spans.add_all(self._scan_line(data, start, end))
            spans.add_all(self._value_below(data, start, end))
        return spans.items

    def _value_below(self, data: bytes, start: int, end: int) -> list[Finding]:
        """The value of a key alone on the line data[start:end] (`key_alone`), when the next
        line holds it alone: YAML (a scalar more indented than the key, the value's only line;
        a block scalar `|` or `>` of one line), INI (`key =` and an indented continuation line)
        or JSON (`"key":` and a string). It is judged as it would be on the key's line."""
        key_line = data[start:end].decode("utf-8", "surrogatepass")
        key = key_alone(key_line)
        if key is None or end >= len(data):
            return []
        lines = next_lines(data, end + 1, 2)  # the value line and the one after it
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
        type_ = classify_value(key.group("key"), op, value, group != "uq", value_line, m.end(group))
        if type_ is None or (type_ == "high_entropy" and not self.entropy):
            return []
        enc = _utf8_offsets(value_line)
        offset = end + 1 + len(lines[0][:strip])
        return [Finding(offset + enc(m.start(group)), offset + enc(m.end(group)), type_)]

    def _has_assignment(self, line: bytes) -> bool:
        """Whether one line alone holds a key-value finding, or is a key whose value is below."""
        if key_alone(line.decode("utf-8", "surrogatepass")) is not None:
            return True
        return bool(self._scan_line(line, 0, len(line)))

    def _scan_line(self, data: bytes, start: int, end: int) -> list[Finding]:
        line = data[start:end].decode("utf-8", "surrogatepass")
        found: list[tuple[int, int, str]] = []  # character offsets in `line`
        parsed: list[tuple[int, int]] = []  # value spans our parser judged, either way
        for m in P.ASSIGNMENT.finditer(line):
            group = next(g for g in ("dq", "sq", "bq", "uq") if m.group(g) is not None)
            parsed.append(m.span(group))
            type_ = classify(m, group, line)
            if type_ and (type_ != "high_entropy" or self.entropy):
                found.append((*m.span(group), type_))
        if "=" in line and ("?" in line or "&" in line):
            for m in P.QUERY_PARAM.finditer(line):
                value = m.group("value")
                if (
                    len(value) >= 4
                    and credential_key(m.group("key"))
                    and not is_placeholder(value)
                    and not P.SCRUBBED.search(value)
                ):
                    found.append((*m.span("value"), "password"))
        for m in P.XML_ELEMENT.finditer(line):
            if not is_placeholder(m.group(2)) and credential_key(m.group(1)):
                found.append((*m.span(2), "password"))
        for m in P.FLAG_ASSIGNMENT.finditer(line):
            g = next(i for i in (1, 2, 3) if m.group(i) is not None)
            if not is_placeholder(m.group(g)) and not P.REFERENCE.fullmatch(m.group(g)):
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
                if len(value) < 4 or is_placeholder(value) or P.SCRUBBED.search(value):
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
                if len(value) < 20 or is_hash_like(value, line):
                    continue
                if plugin.calculate_shannon_entropy(value) <= plugin.entropy_limit:
                    continue
                if h.is_potential_uuid(value) or h.is_sequential_string(value):
                    continue
                for m in re.finditer(re.escape(value), line):
                    found.append((*m.span(), "high_entropy"))
        return found


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


_default: Scrubber | None = None


def scrub_text(text: str) -> tuple[str, Counter[str]]:
    """`Scrubber().scrub(text)` with a module-level default Scrubber."""
    global _default
    if _default is None:
        _default = Scrubber()
    return _default.scrub(text)
