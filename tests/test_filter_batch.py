"""repolm.filter.batch: scrubbing many texts through the line cache, in this process or in
several, gives exactly `Scrubber.scrub` of each text, and its counts."""

from __future__ import annotations

from collections import Counter

import pyarrow as pa
import pytest

from repolm.filter.batch import BatchScrubber, LineScrubber
from repolm.filter.secrets import Scrubber

GITHUB = "ghp" + "_" + "A1b2C3d4E5f6G7h8I9j0" + "K1l2M3n4O5p6Q7r8"
BEGIN, END = "-----BEGIN RSA " + "PRIVATE KEY-----", "-----END RSA " + "PRIVATE KEY-----"
PUTTY = "PuTTY-User-Key-File-2: ssh-rsa\nEncryption: none\nPrivate-Lines: 1\nAAAA\n"


def versions() -> list[str | None]:
    """Versions of a few files, as history holds them: most lines shared, a few findings."""
    base = [f"fn f{i}(x: u32) -> u32 {{ x * {i} }}" for i in range(30)]
    texts: list[str | None] = []
    for v in range(12):
        lines = list(base)
        lines[v] = f'    let token = "{GITHUB}";' if v % 3 == 0 else f"// edit {v}"
        if v == 4:
            lines[20:20] = [BEGIN, "MIIEowIBAAKCAQEA" + "x" * 48, "Zm9vYmFy=="]  # cut short
        if v == 5:
            lines.append("password:\n  hunter2secret")
        if v == 6:
            lines.append(f"contact jane.doe@acme.io {'a' * 64}@corp-internal.io")
        texts.append("\n".join(lines) + "\n")
    texts += [None, "", "x", texts[0], "version:\n  93.184.216.34", PUTTY + "Private-MAC: 0a1b\n"]
    texts += ["password:", "  hunter2secret"]  # key and value in separate texts: nothing
    return texts


def expected(texts: list[str | None]) -> tuple[list[str | None], Counter[str]]:
    s = Scrubber()
    out, counts = [], Counter()
    for t in texts:
        if not t:
            out.append(t)
            continue
        clean, found = s.scrub(t)
        out.append(clean)
        counts.update(found)
    return out, counts


def test_line_scrubber_matches_the_scrubber_text_by_text() -> None:
    texts = versions()
    want, want_counts = expected(texts)
    scrubber = LineScrubber(emails=True, ips=True)
    got = list(texts)
    counts: Counter[str] = Counter()
    for start in range(0, len(texts), 5):  # in batches: later ones find their lines seen
        batch = texts[start : start + 5]
        changed, clean, found = scrubber.scrub(batch)
        for i, c in zip(changed, clean, strict=True):
            got[start + i] = c
        counts.update(found)
    assert got == want
    assert counts == want_counts
    assert {"github_token", "private_key", "password", "email"} <= set(counts)


def test_line_scrubber_starts_afresh_when_full(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(LineScrubber, "MAX_LINES", 10)
    texts = versions()
    scrubber = LineScrubber(emails=True, ips=True)
    for _ in range(2):
        changed, clean, _ = scrubber.scrub(texts)
        got = list(texts)
        for i, c in zip(changed, clean, strict=True):
            got[i] = c
        assert got == expected(texts)[0]


@pytest.mark.parametrize("jobs", [1, 2])
def test_batch_scrubber_in_processes_gives_the_same(jobs: int) -> None:
    texts = versions()
    keys = [f"file{i % 4}.rs" for i in range(len(texts))]
    want, want_counts = expected(texts)
    with BatchScrubber(emails=True, ips=True, jobs=jobs) as scrub:
        first = scrub.submit(pa.array(texts, pa.string()), keys)
        second = scrub.submit(pa.array(texts[::-1], pa.string()), keys[::-1])
        assert first.result().to_pylist() == want
        assert second.result().to_pylist() == want[::-1]
        assert scrub.many(texts, keys) == want
        assert scrub.many([], []) == []
    assert scrub.found == Counter({k: 3 * v for k, v in want_counts.items()})


def test_pii_switches_are_honoured() -> None:
    texts = ["mail jane.doe@acme.io from 93.184.216.34\n"]
    with BatchScrubber(emails=False, ips=False, jobs=1) as scrub:
        assert scrub.many(texts, ["a"]) == texts
    assert not scrub.found
