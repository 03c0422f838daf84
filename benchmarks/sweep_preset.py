"""Tune a CPU preset (`tiny-cpu`, `smollm2-cpu`) for the lowest bits per byte on the test split
within its time budget: train each variant for the same wall-clock minutes on the same
repository and print its test bits per byte next to xz -9e's and zstd -19's on the same bytes
(and, for a fine-tuned preset, its base model's).

    python benchmarks/sweep_preset.py [REPO] [--preset tiny-cpu] [--minutes 4] [--out /tmp/sweep]
                                      [--only NAME] [--rescore]

`--rescore` trains nothing: it runs the eval stage again on the variants already trained in
`--out` (after a change to how evaluation measures).

Variants that change the data (vocabulary, sequence length) rebuild from the cached mine,
chunk and filter stages; the others share one build. Run it on an idle machine: the budget is
wall-clock, so anything else running changes the result.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path


def _shape(layers: int, hidden: int, heads: int, intermediate: int) -> list[str]:
    return [
        f"models.main.layers={layers}",
        f"models.main.hidden={hidden}",
        f"models.main.heads={heads}",
        f"models.main.kv_heads={heads}",
        f"models.main.intermediate={intermediate}",
    ]


TINY_CPU: dict[str, list[str]] = {
    "preset": [],
    "lr 2e-3": ["train.lr=2e-3"],
    "6 layers, hidden 160": _shape(6, 160, 5, 512),
    "vocab 4096": ["tokenize.vocab_size=4096"],
    "seq 256, batch 16": ["build.seq_len=256", "build.batch_size=16"],
    "4 x 128, vocab 4096": [*_shape(4, 128, 4, 344), "tokenize.vocab_size=4096"],
    "3 x 160, vocab 4096": [*_shape(3, 160, 5, 432), "tokenize.vocab_size=4096"],
    "4 x 128, vocab 8192": _shape(4, 128, 4, 344),
    "3 x 160, vocab 4096, gpt2 split": [
        *_shape(3, 160, 5, 432),
        "tokenize.vocab_size=4096",
        "tokenize.pre_tokenizer=gpt2",
    ],
    "3 x 160, vocab 4096, gpt4 split": [
        *_shape(3, 160, 5, 432),
        "tokenize.vocab_size=4096",
        "tokenize.pre_tokenizer=gpt4",
    ],
    "3 x 160, vocab 4096, gpt4 split, lr 6e-3": [
        *_shape(3, 160, 5, 432),
        "tokenize.vocab_size=4096",
        "tokenize.pre_tokenizer=gpt4",
        "train.lr=6e-3",
    ],
    "2 x 192, vocab 4096, gpt4 split": [
        *_shape(2, 192, 6, 512),
        "tokenize.vocab_size=4096",
        "tokenize.pre_tokenizer=gpt4",
    ],
    "2 x 192, vocab 4096, gpt4 split, lr 6e-3": [
        *_shape(2, 192, 6, 512),
        "tokenize.vocab_size=4096",
        "tokenize.pre_tokenizer=gpt4",
        "train.lr=6e-3",
    ],
    "4 x 128, vocab 4096, seq 1024": [
        *_shape(4, 128, 4, 344),
        "tokenize.vocab_size=4096",
        "models.main.context=1024",
        "build.seq_len=1024",
        "build.batch_size=4",
    ],
}
SMOLLM2_CPU: dict[str, list[str]] = {
    "preset": ["eval.base_model=true"],  # the base, once: the same bytes for every variant
    "lr 3e-3": ["train.lr=3e-3"],
    "lr 3e-4": ["train.lr=3e-4"],
    "full, lr 1e-4": ["models.main.method=full", "train.lr=1e-4"],
    "seq 256, batch 16": ["build.seq_len=256", "build.batch_size=16", "train.micro_batch=16"],
    "commits 0.6": [
        "build.mix.files=0.2",
        "build.mix.commits=0.6",
        "build.mix.instructions=0.1",
        "build.mix.qa=0.1",
    ],
    "fim 0.5": ["build.fim_rate=0.5"],
    "lr 1e-2": ["train.lr=1e-2"],
    "lr 3e-2": ["train.lr=3e-2"],
    "lr 1e-2, dropout 0": ["train.lr=1e-2", "models.main.lora.dropout=0"],
    "lr 1e-2, commits 0.6": [
        "train.lr=1e-2",
        "build.mix.files=0.2",
        "build.mix.commits=0.6",
        "build.mix.instructions=0.1",
        "build.mix.qa=0.1",
    ],
    "full, lr 3e-4": ["models.main.method=full", "train.lr=3e-4"],
    "lr 3e-3, dropout 0": ["train.lr=3e-3", "models.main.lora.dropout=0"],
    "lr 3e-3, seq 256, batch 16": [
        "train.lr=3e-3",
        "build.seq_len=256",
        "build.batch_size=16",
        "train.micro_batch=16",
    ],
    "lr 3e-3, commits 0.6": [
        "train.lr=3e-3",
        "build.mix.files=0.2",
        "build.mix.commits=0.6",
        "build.mix.instructions=0.1",
        "build.mix.qa=0.1",
    ],
    "lr 3e-3, seq 1024, batch 4": [
        "train.lr=3e-3",
        "build.seq_len=1024",
        "build.batch_size=4",
        "train.micro_batch=4",
    ],
    "rank 64": ["models.main.lora.rank=64", "models.main.lora.alpha=128"],
    "seq 1024, batch 4": ["build.seq_len=1024", "build.batch_size=4", "train.micro_batch=4"],
}
VARIANTS = {"tiny-cpu": TINY_CPU, "smollm2-cpu": SMOLLM2_CPU}
FAST_EVAL = ["eval.tasks=[]", "eval.suites=[]", "eval.base_model=false"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("repo", nargs="?", default=".")
    parser.add_argument("--preset", choices=sorted(VARIANTS), default="tiny-cpu")
    parser.add_argument("--minutes", type=float, default=4.0)
    parser.add_argument("--out", type=Path, default=Path("/tmp/repolm-sweep"))
    parser.add_argument("--only", action="append", help="variant name (repeatable)")
    parser.add_argument("--rescore", action="store_true", help="evaluate again, train nothing")
    args = parser.parse_args()

    from repolm.config import load_config
    from repolm.layout import RunLayout
    from repolm.pipeline.runner import run_pipeline

    base = args.out / "base"
    budget = [f"train.max_minutes={args.minutes}"]
    if not args.rescore:
        run_pipeline(base, Path(args.repo), load_config(preset=args.preset), until="filter")
    rows = []
    for name, sets in VARIANTS[args.preset].items():
        if args.only and name not in args.only:
            continue
        out = args.out / name.replace(" ", "_").replace(",", "")
        config = load_config(preset=args.preset, overrides=[*budget, *FAST_EVAL, *sets])
        t0 = time.monotonic()
        if args.rescore:
            run_pipeline(out, Path(args.repo), config, only=["eval"], force=True)
        else:
            shutil.rmtree(out, ignore_errors=True)
            shutil.copytree(base, out)  # mine, chunk and filter stay cached
            run_pipeline(out, Path(args.repo), config, until="eval")
        seconds = time.monotonic() - t0
        report = json.loads(RunLayout(out).eval_report.read_text())
        train = json.loads(RunLayout(out).train_report.read_text())["models"]["main"]
        test = report["baselines"]["test"]
        model = report["models"]["main"]
        rows.append(
            {
                "variant": name,
                "parameters": train["parameters"]["total"],
                "steps": train["steps"],
                "tokens_per_s": train["tokens_per_s"],
                "val_loss": train["validation"]["final"]["loss"],
                "test_bpb": model["bits_per_byte"]["test"]["bits_per_byte"],
                "val_bpb": model["bits_per_byte"]["val"]["bits_per_byte"],
                "base_test_bpb": model.get("base", {})
                .get("bits_per_byte", {})
                .get("test", {})
                .get("bits_per_byte"),
                "test_bytes": report["text"]["test"]["bytes"],
                "xz": test["xz -9e"]["bits_per_byte"],
                "xz_conditioned": test["xz -9e"]["conditioned_bits_per_byte"],
                "zstd": test["zstd -19"]["bits_per_byte"],
                "seconds": round(seconds, 1),
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    print(
        "\n| variant | parameters | steps | tokens/s | test bits/byte | val bits/byte | "
        "xz -9e | xz conditioned | zstd -19 | base |"
    )
    print("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
    for r in rows:
        print(
            f"| {r['variant']} | {r['parameters'] / 1e6:.2f}M | {r['steps']} | "
            f"{r['tokens_per_s']:,.0f} | {r['test_bpb']:.3f} | {r['val_bpb']:.3f} | "
            f"{r['xz']:.3f} | {r['xz_conditioned']:.3f} | {r['zstd']:.3f} | "
            + (f"{r['base_test_bpb']:.3f} |" if r["base_test_bpb"] is not None else "|")
        )


if __name__ == "__main__":
    sys.exit(main())
