"""The two pre-tokenizers of `tokenize.pre_tokenizer` against each other on one run's corpus:
each trains a tokenizer with the tokenize stage itself (same sample, same vocabulary), then
bytes per token on the future commits and on training patches, and encoding speed.

    python benchmarks/bench_pre_tokenizer.py RUN_DIR [--vocab 4096] [--runs 3] [--mb 20]

RUN_DIR is a run whose filter stage is done (and, for the future commits, its build stage:
`dataset/eval/future_records.parquet`). gpt2 is the reference; the ratios are gpt4 / gpt2.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from timing import best_of  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--vocab", type=int, default=4096)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--mb", type=float, default=20.0, help="patch text timed (MB)")
    args = parser.parse_args()

    import pyarrow.parquet as pq
    from tokenizers import Tokenizer

    from repolm.config.schema import TokenizeConfig
    from repolm.layout import RunLayout
    from repolm.tokenize.stage import tokenize_run

    layout = RunLayout(args.run)
    filter_dir = layout.filter_dir
    patches, size = [], 0
    for row in pq.read_table(layout.filtered("changes"), columns=["patch"]).to_pylist():
        if row["patch"] and size < args.mb * 1e6:
            patches.append(row["patch"])
            size += len(row["patch"].encode())
    future_path = layout.eval_set("future_records")
    future = pq.read_table(future_path).column("text").to_pylist() if future_path.exists() else []

    rows = {}
    for name in ("gpt2", "gpt4"):
        cfg = TokenizeConfig(vocab_size=args.vocab, pre_tokenizer=name)
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            tokenize_run(filter_dir, Path(tmp) / "tok", cfg)
            stage = time.perf_counter() - t0
            tok = Tokenizer.from_file(str(Path(tmp) / "tok" / "tokenizer.json"))
        tok.encode_special_tokens = True  # as the build stage encodes

        def tokens(texts: list[str], tok: Tokenizer = tok) -> int:
            return sum(len(e.ids) for e in tok.encode_batch_fast(texts, add_special_tokens=False))

        seconds, n = best_of(args.runs, lambda: tokens(patches))
        rows[name] = {
            "stage_s": stage,
            "future": sum(len(t.encode()) for t in future) / max(tokens(future), 1),
            "patches": size / n,
            "mb_per_s": size / 1e6 / seconds,
        }
        print(name, rows[name], flush=True)

    kb = sum(len(t.encode()) for t in future) / 1e3
    print(
        f"\nvocabulary {args.vocab:,}; {size / 1e6:.1f} MB of patches, {kb:,.0f} KB of "
        "future commit records"
    )
    print(
        "| pre-tokenizer | bytes/token, future commits | bytes/token, patches | "
        "encoding MB/s | tokenize stage s |"
    )
    print("|---|--:|--:|--:|--:|")
    for name, r in rows.items():
        print(
            f"| {name} | {r['future']:.3f} | {r['patches']:.3f} | {r['mb_per_s']:.2f} | "
            f"{r['stage_s']:.1f} |"
        )
    a, b = rows["gpt4"], rows["gpt2"]
    future_ratio = f"{a['future'] / b['future']:.3f}" if future else "—"
    print(
        f"| gpt4 / gpt2 | {future_ratio} | "
        f"{a['patches'] / b['patches']:.3f} | {a['mb_per_s'] / b['mb_per_s']:.3f} | "
        f"{a['stage_s'] / b['stage_s']:.2f} |"
    )


if __name__ == "__main__":
    sys.exit(main())
