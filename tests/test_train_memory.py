"""The memory estimator against real training: peak RSS of fp32 AdamW steps (within 25 %), exact
counts of the tensors autograd saves, and the order of its suggestions.

torch and transformers take ~6 s to import, so one subprocess imports them once and forks a fresh
child per measured run (ru_maxrss is a high-water mark: one run per process); this test process
never imports them.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from typing import Any

import pytest

from repolm.train.memory import (
    GIB,
    MIB,
    ModelShape,
    estimate_memory,
    fits,
    import_overhead_bytes,
    lora_params,
)
from repolm.train.suggest import suggest

SMALL = dict(
    vocab_size=8192,
    hidden_size=256,
    intermediate_size=688,
    num_hidden_layers=4,
    num_attention_heads=4,
    num_key_value_heads=4,
    max_position_embeddings=512,
    tie_word_embeddings=True,
)
RUNS = {"4x256": (4, 256, False), "8x512": (8, 512, False), "8x512-checkpointed": (8, 512, True)}
SAVED = [(4, True, "float32"), (2, True, "float32"), (2, False, "float32"), (4, True, "bfloat16")]

PROBE = r"""
import dataclasses, json, os, resource, sys
import torch
from transformers import GPT2Config, LlamaConfig, LlamaForCausalLM
from transformers.masking_utils import find_packed_sequence_indices
from repolm.train.memory import ModelShape

args = json.loads(sys.argv[1])

def rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()

def packed_rows(batch, seq, packed=True):
    half = seq // 2
    pos = torch.cat([torch.arange(half), torch.arange(seq - half)]) if packed else torch.arange(seq)
    return pos.expand(batch, seq)

def train_two_steps(batch, seq, checkpointing):
    # Two fp32 AdamW steps on rows of two packed documents, so transformers builds the
    # block-diagonal mask training uses. Baseline: the RSS after imports, before the model.
    torch.manual_seed(0)
    config = LlamaConfig(**args["config"])
    config._attn_implementation = "sdpa"
    ids = torch.randint(0, config.vocab_size, (batch, seq))
    position_ids = packed_rows(batch, seq)
    assert find_packed_sequence_indices(position_ids) is not None
    base = rss_bytes()
    model = LlamaForCausalLM(config)
    model.config.use_cache = False  # with a KV cache transformers skips the packed mask
    if checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    for _ in range(2):
        out = model(input_ids=ids, position_ids=position_ids, labels=ids, use_cache=False)
        out.loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        del out
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    params = sum(p.numel() for p in model.parameters())
    return {"peak": peak - base, "params": params}

def in_fresh_child(fn, *a):
    # fork before torch starts its thread pools, so each run has its own high-water mark
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        os.write(write, json.dumps(fn(*a)).encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as f:
        data = f.read()
    _, status = os.waitpid(pid, 0)
    assert status == 0 and data, f"run {a} failed"
    return json.loads(data)

def saved_bytes(kv_heads, packed, dtype):
    config = LlamaConfig(vocab_size=512, hidden_size=64, intermediate_size=172,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=kv_heads,
                         max_position_embeddings=128, tie_word_embeddings=False)
    config._attn_implementation = "sdpa"
    model = LlamaForCausalLM(config).to(getattr(torch, dtype))
    ids = torch.randint(0, 512, (2, 32))
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved = {}
    def pack(t):
        if t.untyped_storage().data_ptr() not in params:
            saved[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(input_ids=ids, position_ids=packed_rows(2, 32, packed), labels=ids, use_cache=False)
    n = sum(p.numel() for p in model.parameters())
    shape = ModelShape.from_config(config, n, n)
    return {"bytes": sum(saved.values()), "shape": dataclasses.asdict(shape)}

result = {"runs": {name: in_fresh_child(train_two_steps, *run) for name, run in args["runs"]}}
result["saved"] = [saved_bytes(*variant) for variant in args["saved"]]
gpt2 = ModelShape.from_config(GPT2Config(n_embd=128, n_layer=3, n_head=4), 10, 10)
result["gpt2"] = dataclasses.asdict(gpt2)
print(json.dumps(result))
"""


@pytest.fixture(scope="module")
def probe(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    if not sys.platform.startswith("linux"):
        pytest.skip("reads /proc and ru_maxrss in KiB (Linux)")
    home = str(tmp_path_factory.mktemp("probe-home"))
    args = {"config": SMALL, "runs": list(RUNS.items()), "saved": SAVED}
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "2",
        "HF_HUB_OFFLINE": "1",
        "HOME": home,
        "HF_HOME": home,
        "XDG_CACHE_HOME": home,
    }
    done = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(args)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def small_shape(params: int) -> ModelShape:
    return ModelShape(
        vocab_size=8192,
        hidden=256,
        layers=4,
        heads=4,
        kv_heads=4,
        intermediate=688,
        tied_embeddings=True,
        total_params=params,
        trainable_params=params,
    )


@pytest.mark.parametrize("run", list(RUNS))
def test_estimate_within_25_percent_of_peak_rss(run: str, probe: dict[str, Any]) -> None:
    batch, seq, ckpt = RUNS[run]
    measured = probe["runs"][run]
    estimate = estimate_memory(small_shape(measured["params"]), batch, seq, checkpointing=ckpt)
    predicted = estimate.total() - import_overhead_bytes("cpu")
    print(f"{run}: measured {measured['peak'] / MIB:.0f} MiB, estimated {predicted / MIB:.0f} MiB")
    assert 0.75 <= predicted / measured["peak"] <= 1.25, (run, measured["peak"] / MIB)


def test_checkpointing_lowers_both_measured_and_estimated_peaks(probe: dict[str, Any]) -> None:
    plain, ckpt = probe["runs"]["8x512"], probe["runs"]["8x512-checkpointed"]
    estimate = estimate_memory(small_shape(plain["params"]), 8, 512)
    assert ckpt["peak"] < plain["peak"]
    assert estimate.total(checkpointing=True) < estimate.total(checkpointing=False)


@pytest.mark.parametrize("index", range(len(SAVED)))
def test_activation_formula_counts_saved_tensors_exactly(index: int, probe: dict) -> None:
    """Every tensor autograd saves (by storage, parameters excluded) is predicted: the layers,
    the rest of the model, and the fp32 log-probs the loss keeps (grouped k/v, bf16, no mask)."""
    _, packed, dtype = SAVED[index]
    counted = probe["saved"][index]
    shape = ModelShape(**counted["shape"])
    cb = 4 if dtype == "float32" else 2
    est = estimate_memory(shape, 2, 32, param_bytes=cb, compute_bytes=cb, packed=packed)
    log_probs = 2 * 32 * shape.vocab_size * 4
    assert abs(counted["bytes"] - (est.activations + log_probs)) <= 64


def test_from_config_reads_gpt2_names(probe: dict[str, Any]) -> None:
    shape = ModelShape(**probe["gpt2"])
    assert (shape.hidden, shape.layers, shape.heads, shape.kv_heads) == (128, 3, 4, 4)
    assert shape.intermediate == 512 and not shape.gated_mlp and shape.tied_embeddings


def llama_7b(trainable: int | None = None) -> ModelShape:
    total = 6_738_415_616
    return ModelShape(
        vocab_size=32000,
        hidden=4096,
        layers=32,
        heads=32,
        kv_heads=32,
        intermediate=11008,
        tied_embeddings=False,
        total_params=total,
        trainable_params=total if trainable is None else trainable,
    )


ADAPTERS = 39_976_960  # peft's count for r=16 on Llama-2-7B's seven projections


def test_lora_counts_gradients_and_optimizer_for_adapters_only() -> None:
    assert lora_params(llama_7b(), rank=16) == ADAPTERS
    full = estimate_memory(llama_7b(), 1, 2048, 2, 2, "full", device="cuda")
    lora = estimate_memory(llama_7b(ADAPTERS), 1, 2048, 2, 2, "lora", device="cuda")
    assert full.gradients == llama_7b().total_params * 2
    assert (lora.gradients, lora.optimizer) == (ADAPTERS * 4, ADAPTERS * 8)
    assert lora.activations == full.activations and lora.logits == full.logits
    qlora = estimate_memory(llama_7b(ADAPTERS), 1, 2048, 0.5, 2, "qlora", device="cuda")
    assert 3.5 * GIB < qlora.weights < lora.weights / 3
    with pytest.raises(ValueError, match="full training"):
        estimate_memory(llama_7b(), 1, 2048, 0.5, 2, "full")


def test_fits_and_overhead() -> None:
    est = estimate_memory(llama_7b(), 1, 512, 2, 2, device="cuda")
    assert fits(est, est.total()) and not fits(est, est.total() - 1)
    assert not fits(est, est.total(), margin=0.1)
    assert import_overhead_bytes("cuda") == 0 < import_overhead_bytes("cpu")


def estimated(line: str) -> float:
    value, unit = re.search(r"est\. ([\d.]+) (GiB|MiB)", line).groups()
    return float(value) * (GIB if unit == "GiB" else MIB)


def test_suggest_prefers_accumulation_then_checkpointing_then_adapters() -> None:
    run = dict(micro_batch=2, seq_len=512, param_bytes=2, compute_bytes=2, device="cuda")
    need = estimate_memory(llama_7b(), 2, 512, 2, 2, device="cuda").total()
    assert suggest(llama_7b(), need, **run) == []
    lines = suggest(llama_7b(), 80 * GIB, **run)
    assert [line.split(" (est.")[0] for line in lines] == [
        "micro_batch 2 → 1 with grad_accum 1 → 2 keeps the effective batch",
        "turn on gradient_checkpointing",
        "use method lora with rank 16",
        "use method qlora with rank 16",
        "seq_len 512 → 256, which changes what the model sees",
    ]
    assert all(estimated(line) <= 80 * GIB for line in lines)
    assert estimated(lines[3]) < estimated(lines[2]) < estimated(lines[1])


def test_suggest_combines_changes_and_knows_qlora_needs_cuda() -> None:
    run = dict(micro_batch=8, seq_len=2048, param_bytes=2, compute_bytes=2, method="lora")
    lines = suggest(llama_7b(ADAPTERS), 24 * GIB, **run, device="cuda")
    assert lines[0].startswith("turn on gradient_checkpointing and micro_batch 8 → 4 with")
    assert not any(
        "qlora" in line for line in suggest(llama_7b(), 80 * GIB, micro_batch=2, seq_len=512)
    )
    hopeless = suggest(llama_7b(), 1 * GIB, micro_batch=4, seq_len=4096)
    assert len(hopeless) == 1 and "use a smaller model or a bigger device" in hopeless[0]
