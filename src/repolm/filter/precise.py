"""The precise formats of `repolm.filter.secrets`' first pass, found anywhere in UTF-8 bytes:
tokens by pattern, PEM and PuTTY key blocks, Bitcoin WIF keys, and the PII (email addresses,
public IP addresses). Each finder returns spans and type names, never a value.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from typing import NamedTuple

from repolm.filter import patterns as P
from repolm.filter.keyvalue import is_placeholder

_GLOBAL_UNICAST = ipaddress.IPv6Network("2000::/3")


class Finding(NamedTuple):
    """A span of UTF-8 bytes and its type: never the value."""

    start: int
    end: int
    type: str


def is_word_byte(b: int) -> bool:
    return b == 0x5F or 0x30 <= b <= 0x39 or 0x41 <= b <= 0x5A or 0x61 <= b <= 0x7A


def tokens(data: bytes, pat: P.TokenPattern) -> list[Finding]:
    found = []
    for m in pat.regex.finditer(data):
        s, e = m.span(pat.group)
        if pat.boundary and s and is_word_byte(data[s - 1]):
            continue
        if pat.group and is_placeholder(data[s:e].decode("utf-8", "replace")):
            continue
        found.append(Finding(s, e, pat.type))
    return found


def has_token(pat: P.TokenPattern, line: bytes) -> bool:
    return bool(tokens(line, pat))


def has_wif_key(line: bytes) -> bool:
    return bool(wif_keys(line))


def has_email(line: bytes) -> bool:
    return bool(emails(line))


def has_ip(line: bytes) -> bool:
    return bool(ipv4s(line) or ipv6s(line))


def opens_block(line: bytes) -> bool:
    """Whether `line` can start a finding that ends on a later line: a PEM or PuTTY key."""
    return bool(P.PEM_BEGIN.search(line) or P.PUTTY_START.search(line))


def private_keys(data: bytes) -> list[Finding]:
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


def base58check_payload(s: bytes) -> bytes | None:
    n = 0
    for c in s:
        n = n * 58 + P.BASE58_ALPHABET.index(chr(c))
    raw = b"\0" * (len(s) - len(s.lstrip(b"1"))) + n.to_bytes((n.bit_length() + 7) // 8, "big")
    payload, check = raw[:-4], raw[-4:]
    if len(raw) < 5 or hashlib.sha256(hashlib.sha256(payload).digest()).digest()[:4] != check:
        return None
    return payload


def wif_keys(data: bytes) -> list[Finding]:
    """Bitcoin WIF private keys: base58check with version 0x80 (validated, so no guesswork)."""
    found = []
    for regex in P.WIF_CANDIDATES:
        for m in regex.finditer(data):
            if m.start() and data[m.start() - 1] in P.BASE58_CHARS:
                continue
            payload = base58check_payload(m.group())
            if payload and payload[0] == 0x80 and len(payload) in (33, 34):
                found.append(Finding(*m.span(), "crypto_private_key"))
    return found


# -- PII ----------------------------------------------------------------------------------------


def emails(data: bytes) -> list[Finding]:
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


def ipv4s(data: bytes) -> list[Finding]:
    found = []
    for m in P.IPV4_TAIL.finditer(data):
        s = m.start()
        while s > m.start() - 3 and s and 0x30 <= data[s - 1] <= 0x39:
            s -= 1
        if s == m.start() or (s and (is_word_byte(data[s - 1]) or data[s - 1] == 0x2E)):
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


def ipv6s(data: bytes) -> list[Finding]:
    """Global unicast IPv6 (2000::/3) only: other shapes are code (`a::b`), times or MACs."""
    found = []
    for regex in P.IPV6_CANDIDATES:
        for m in regex.finditer(data):
            s, e = m.span()
            if s and (is_word_byte(data[s - 1]) or data[s - 1] in b":."):
                continue
            if e < len(data) and (is_word_byte(data[e]) or data[e] == 0x3A):
                continue
            try:
                addr = ipaddress.IPv6Address(data[s:e].decode())
            except ValueError:
                continue
            if addr in _GLOBAL_UNICAST and addr.is_global:
                found.append(Finding(s, e, "ip"))
    return sorted(found)
