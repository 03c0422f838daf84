"""The GPU check's part e: `repolm serve` at 1, 4 and 16 concurrent clients next to bare
`generate` (gpu_check skips it where `repolm.serve.app` is missing)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from gpu_parts import SMALL, Context, outcome

CLIENTS = (1, 4, 16)


def part_e(ctx: Context) -> dict[str, Any]:
    """Serving throughput at 1/4/16 concurrent clients next to bare `generate`.

    `repolm serve --model DIR --port PORT` serves the model under the id DIR."""
    model = next((m for m in ctx.models if (m / "config.json").is_file()), None)
    model = model or train_quick(ctx)
    prompts = [f"def function_{i}(value):\n    " for i in range(16)]
    tokens = 64
    bare = bare_generate(model, prompts[:4], tokens)
    port = 8765
    log = ctx.work / "serve.log"
    with log.open("w") as sink:
        server = subprocess.Popen(
            serve_command(model, port), stdout=sink, stderr=sink, start_new_session=True
        )
    try:
        wait_for_port(port, server, log, timeout=120)
        rates = {n: serve_rate(port, str(model), prompts, n, tokens) for n in CLIENTS}
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
    figures = {f"serve tokens/s, {n} clients": round(r) for n, r in rates.items()}
    figures["bare generate tokens/s"] = round(bare)
    return outcome(
        {"served every client": all(r > 0 for r in rates.values())},
        figures=figures,
        targets={},
        detail={"model": str(model)},
    )


def train_quick(ctx: Context) -> Path:
    run = ctx.build(SMALL, SMALL)
    ctx.train(run, SMALL, ["train.max_steps=5", "train.max_minutes=null"], "e-model")
    return ctx.models[-1]


def serve_command(model: Path, port: int) -> list[str]:
    return [sys.executable, "-m", "repolm", "serve", "--model", str(model), "--port", str(port)]


def wait_for_port(port: int, server: subprocess.Popen, log: Path, timeout: float) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"repolm serve exited: {log.read_text()[-300:]}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.5)
    raise TimeoutError(f"repolm serve did not listen on port {port} in {timeout:g} s")


def complete(port: int, model: str, prompt: str, tokens: int) -> int:
    """One completion; the tokens it generated."""
    import urllib.request

    body = json.dumps(
        {"model": model, "prompt": prompt, "max_tokens": tokens, "temperature": 0}
    ).encode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/completions",
        data=body,
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=120) as response:
        reply = json.loads(response.read())
    return int(reply.get("usage", {}).get("completion_tokens", tokens))


def serve_rate(port: int, model: str, prompts: list[str], clients: int, tokens: int) -> float:
    from concurrent.futures import ThreadPoolExecutor

    t0 = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        done = sum(pool.map(lambda p: complete(port, model, p, tokens), prompts[: max(clients, 4)]))
    return done / (time.perf_counter() - t0)


def bare_generate(model_dir: Path, prompts: list[str], tokens: int) -> float:
    """Tokens/s of transformers' `generate`, one prompt at a time, greedy."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16).cuda().eval()
    done, t0 = 0, time.perf_counter()
    for prompt in prompts:
        ids = tok(prompt, return_tensors="pt").input_ids.cuda()
        out = model.generate(ids, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False)
        done += out.shape[1] - ids.shape[1]
    return done / (time.perf_counter() - t0)
