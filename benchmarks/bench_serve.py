#!/usr/bin/env python3
"""Benchmark `repolm serve` against bare `model.generate` on the same model and prompts.

    python benchmarks/bench_serve.py [--model smollm2-135m|DIR] [--tokens 32] [--requests 16]
                                     [--clients 1 4 16] [--source src/repolm] [--json FILE]

The prompts are the first 12 lines of `--requests` Python files under `--source` (real code).

In one process, loopback only: the reference first, bare `generate` (greedy, one prompt at a
time, `--tokens` new tokens at most, KV cache), timed per request; then the app on a free
127.0.0.1 port (uvicorn in a thread, the batches on the main thread as in `repolm serve`)
driven by the `openai` client from 1, 4 and 16 concurrent clients, each sending its share of
`--requests` completions (greedy, the same prompts and budget), streamed and not. Per setting:
time to first token (streamed), p50/p95 latency, generated tokens/s over the wall time, 5xx
count. Ratios printed: batch-1 p50 against bare `generate`'s p50 (target <= 1.2) and throughput
at 16 clients against 1 (target >= 3). Greedy decoding makes the server's text the bare
model's, so both do the same work.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def prompts(n: int, source: Path) -> list[str]:
    """The first 12 lines of `n` Python files under `source` (sorted, so the same every run):
    real code, which a model tuned on it goes on writing."""
    files = sorted(f for f in source.rglob("*.py") if f.stat().st_size > 400)
    if len(files) < n:
        raise SystemExit(f"{source} has {len(files)} Python files of 400+ bytes; {n} needed")
    step = len(files) / n
    chosen = [files[int(k * step)] for k in range(n)]
    return ["".join(f.read_text().splitlines(keepends=True)[:12]) for f in chosen]


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def bare(lm, asks: list[str], tokens: int) -> dict:
    import torch

    times, made = [], 0
    for text in asks:
        ids = torch.tensor([lm.encode(text)])
        t0 = time.perf_counter()
        with torch.inference_mode():
            out = lm.model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=tokens,
                do_sample=False,
                eos_token_id=list(lm.eos_ids),
                pad_token_id=lm.pad_id,
                use_cache=True,
            )
        times.append(time.perf_counter() - t0)
        made += out.shape[1] - ids.shape[1]
    return {
        "p50_s": pct(times, 0.5),
        "p95_s": pct(times, 0.95),
        "tokens_s": made / sum(times),
        "tokens_per_request": made / len(asks),
    }


def drive(url: str, model: str, asks: list[str], tokens: int, clients: int, stream: bool) -> dict:
    import openai

    client = openai.OpenAI(base_url=url, api_key="bench", max_retries=0, timeout=600)
    errors = 0

    def one(text: str) -> tuple[float, float | None, int]:
        nonlocal errors
        t0 = time.perf_counter()
        try:
            if not stream:
                got = client.completions.create(
                    model=model, prompt=text, max_tokens=tokens, temperature=0
                )
                return time.perf_counter() - t0, None, got.usage.completion_tokens
            first, used = None, 0
            for chunk in client.completions.create(
                model=model,
                prompt=text,
                max_tokens=tokens,
                temperature=0,
                stream=True,
                stream_options={"include_usage": True},
            ):
                if first is None and chunk.choices and chunk.choices[0].text:
                    first = time.perf_counter() - t0
                if chunk.usage:
                    used = chunk.usage.completion_tokens
            return time.perf_counter() - t0, first, used
        except openai.APIStatusError as e:
            errors += e.status_code >= 500
            return time.perf_counter() - t0, None, 0

    t0 = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(one, asks))
    wall = time.perf_counter() - t0
    lat = [r[0] for r in results]
    firsts = [r[1] for r in results if r[1] is not None]
    return {
        "clients": clients,
        "stream": stream,
        "p50_s": pct(lat, 0.5),
        "p95_s": pct(lat, 0.95),
        "ttft_p50_s": pct(firsts, 0.5) if firsts else None,
        "tokens_s": sum(r[2] for r in results) / wall,
        "tokens_per_request": sum(r[2] for r in results) / len(results),
        "errors_5xx": errors,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--requests", type=int, default=16)
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--source", type=Path, default=ROOT / "src" / "repolm")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    from repolm.lm import load_model
    from repolm.serve.app import ServedModel, Settings
    from repolm.serve.engine import Engine, Runner
    from test_serve import Server  # the test suite's loopback server in a thread

    lm = load_model(args.model, max_len=2048)
    asks = prompts(args.requests, args.source)
    bare(lm, asks[:2], 4)  # warm-up
    reference = bare(lm, asks, args.tokens)
    runner = Runner()  # as `repolm serve`: batches on this thread, HTTP on another
    engine = Engine(lm, max_batch=max(args.clients), runner=runner)

    def clients() -> list[dict]:
        server = Server([ServedModel("bench", lm, engine)], Settings())
        try:
            return [
                drive(server.url + "/v1", "bench", asks, args.tokens, n, stream)
                for n in args.clients
                for stream in (False, True)
            ]
        finally:
            server.stop()
            engine.close()

    rows = runner.run_while(clients)
    one = next(r for r in rows if r["clients"] == min(args.clients) and not r["stream"])
    most = next(r for r in rows if r["clients"] == max(args.clients) and not r["stream"])
    ratios = {
        "batch-1 p50 / bare generate p50": one["p50_s"] / reference["p50_s"],
        f"tokens/s at {most['clients']} clients / at {one['clients']}": most["tokens_s"]
        / one["tokens_s"],
    }
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores; {args.model}")
    print(f"{args.requests} requests of at most {args.tokens} tokens, greedy\n")
    print("| setting | p50 s | p95 s | TTFT p50 s | tokens/s | tokens/request | 5xx |")
    print("|---|--:|--:|--:|--:|--:|--:|")
    print(
        f"| bare generate, one at a time | {reference['p50_s']:.3f} | {reference['p95_s']:.3f} "
        f"| | {reference['tokens_s']:.1f} | {reference['tokens_per_request']:.1f} | |"
    )
    for r in rows:
        ttft = f"{r['ttft_p50_s']:.3f}" if r["ttft_p50_s"] is not None else ""
        print(
            f"| serve, {r['clients']} client(s){', stream' if r['stream'] else ''} "
            f"| {r['p50_s']:.3f} | {r['p95_s']:.3f} | {ttft} | {r['tokens_s']:.1f} "
            f"| {r['tokens_per_request']:.1f} | {r['errors_5xx']} |"
        )
    print()
    for name, value in ratios.items():
        print(f"{name}: {value:.2f}")
    if args.json:
        args.json.write_text(json.dumps({"bare": reference, "serve": rows, "ratios": ratios}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
