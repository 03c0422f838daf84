"""Compressor baselines in bits per byte: `xz -9e` and `zstd -19` on the same bytes the model
is scored on, standalone and conditioned on the training text.

Conditioned = compressed size of (train + text) minus that of train alone: what the compressor
pays for the text once it has seen the training data, as the model has. A model that cannot
beat this has learned nothing a general-purpose compressor doesn't get for free. The outputs
are byte-identical to the command-line tools' (`xz -9e -T1`, `zstd -19`; a test checks).
"""

from __future__ import annotations

import lzma
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

XZ_PRESET = 9 | lzma.PRESET_EXTREME
ZSTD_LEVEL = 19


def xz_size(data: bytes) -> int:
    """Bytes of `xz -9e -T1` output (.xz container, CRC64: the tool's defaults)."""
    return len(lzma.compress(data, format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC64, preset=XZ_PRESET))


def zstd_size(data: bytes) -> int:
    """Bytes of `zstd -19` output (with the content size and checksum the tool writes)."""
    import zstandard

    params = zstandard.ZstdCompressionParameters.from_level(
        ZSTD_LEVEL, source_size=len(data), write_checksum=True, write_content_size=True
    )
    return len(zstandard.ZstdCompressor(compression_params=params).compress(data))


COMPRESSORS: dict[str, Callable[[bytes], int]] = {"xz -9e": xz_size, "zstd -19": zstd_size}


def sizes(texts: Sequence[bytes], compressor: str = "xz -9e") -> list[int]:
    """Each text's compressed size on its own, in two threads."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        return list(pool.map(COMPRESSORS[compressor], texts))


def baselines(texts: dict[str, bytes], train: bytes) -> dict[str, dict[str, dict[str, float]]]:
    """For each text (e.g. "val", "test") and compressor: bits per byte standalone and
    conditioned on `train`, plus the sizes. Compressions run in threads (both libraries
    release the GIL)."""
    jobs: dict[tuple[str, str], tuple[Callable[[bytes], int], bytes]] = {}
    for cname, fn in COMPRESSORS.items():
        if train:
            jobs[(cname, "")] = (fn, train)
        for tname, data in texts.items():
            jobs[(cname, tname)] = (fn, data)
            if train:
                jobs[(cname, f"+{tname}")] = (fn, train + data)
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {k: pool.submit(fn, data) for k, (fn, data) in jobs.items()}
        size = {k: f.result() for k, f in futures.items()}
    out: dict[str, dict[str, dict[str, float]]] = {}
    for tname, data in texts.items():
        n = len(data)
        out[tname] = {}
        for cname in COMPRESSORS:
            alone = size[(cname, tname)]
            entry: dict[str, float] = {
                "bits_per_byte": round(8 * alone / n, 4) if n else float("nan"),
                "compressed_bytes": alone,
            }
            if train:
                extra = size[(cname, f"+{tname}")] - size[(cname, "")]
                entry["conditioned_bits_per_byte"] = round(8 * extra / n, 4) if n else float("nan")
                entry["conditioned_bytes"] = extra
            out[tname][cname] = entry
    return out
