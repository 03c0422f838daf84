"""The eval stage: every trained model measured on the commits after the cutoff, each figure
next to baselines computed on the same text, into OUT/eval/report.json.

Order: the text (the future's commit records, a deterministic sample of `eval.max_bytes` of
each split, and the training text read back from the build's shards), the compressor baselines
on exactly those bytes (no model needed), then per model (its base model first, for a
fine-tuned one, on the same figures): bits per byte on each future split, the generation
tasks, the behavioural suites, the code benchmarks and QA the config asks for. Every model is
given sequences of at most `eval.window` tokens (the build's seq_len unless set). Each
evaluation records its time and peak memory.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from repolm.config.schema import Config, EvalConfig, ModelConfig
from repolm.dataset.plan import read_stats
from repolm.errors import RepolmError
from repolm.eval import codebench
from repolm.eval.behaviour import find_suite, resolve_suite, run_suite
from repolm.eval.compress import baselines, sizes
from repolm.eval.perplexity import score_documents
from repolm.eval.qa import run_qa
from repolm.eval.texts import held_out, sample, training_text
from repolm.fsutil import write_json_atomic
from repolm.hardware.monitor import HardwareMonitor
from repolm.layout import RunLayout
from repolm.lm import LoadedModel, load_model
from repolm.stage import StageContext, StageResult

log = logging.getLogger(__name__)


def run_stage(ctx: StageContext) -> StageResult:
    report = evaluate(ctx.layout, ctx.config)
    write_json_atomic(ctx.layout.eval_report, report)
    brief = summary(report)
    return StageResult(stats=brief, summary=_line(brief), manifest={"eval": brief})


def evaluate(layout: RunLayout, config: Config) -> dict[str, Any]:
    cfg = config.eval
    for suite in cfg.suites:  # a mistyped suite fails now, not after the models are scored
        find_suite(suite)
    t0 = time.monotonic()
    stats = read_stats(layout)
    report: dict[str, Any] = {"cutoff": stats.get("cutoff", {}), "text": {}, "timings": {}}
    future = held_out_splits(report["cutoff"], cfg)
    if not future:
        report["future"] = skipped_future(report["cutoff"], cfg)
        log.info(f"eval: {report['future']['reason']}: evaluations on the future skipped")
    docs = {}
    if future:
        with measured(report, "text"):
            for split in future:
                whole = held_out(layout, split)
                if not whole:
                    raise RepolmError(
                        f"the {split} split has no commit records to evaluate on",
                        "move split.cutoff or raise split.test_fraction / split.val_fraction",
                    )
                docs[split] = sample(whole, cfg.max_bytes)
                report["text"][split] = {**text_size(docs[split]), "full": text_size(whole)}
                report["text"][split]["max_bytes"] = cfg.max_bytes or None
                if len(docs[split]) < len(whole):
                    kept, full = report["text"][split], report["text"][split]["full"]
                    log.info(
                        f"eval: {split}: a sample of {kept['documents']} of {full['documents']} "
                        f"records, {kept['bytes']:,} of {full['bytes']:,} bytes (eval.max_bytes)"
                    )
            train, total = training_text(layout, int(cfg.conditioning_mb * 2**20))
        report["text"]["train"] = {"bytes": total, "conditioning_bytes": len(train)}
        with measured(report, "compressors"):
            joined = {s: "".join(x.text for x in d).encode("utf-8") for s, d in docs.items()}
            report["baselines"] = baselines(joined, train)
            report["commits"] = {s: by_commit(d) for s, d in docs.items()}
    window = cfg.window or stats.get("seq_len")  # what training saw
    report["window"] = window
    report["models"] = {}
    bases: dict[str, dict[str, Any]] = {}  # a base two models share is measured once
    for name, mc in config.models.items():
        report["models"][name] = evaluate_model(layout, name, mc, cfg, docs, report, window, bases)
    report["seconds"] = round(time.monotonic() - t0, 2)
    return report


def held_out_splits(cutoff: dict[str, Any], cfg: EvalConfig) -> list[str]:
    """The splits of `eval.splits` that the run's split holds commits in (none without a
    future; validation neither when split.val_fraction is 0)."""
    if cutoff.get("future") is False:
        return []
    counts = cutoff.get("commits") or {}
    return [s for s in cfg.splits if counts.get(s, 1)]


def skipped_future(cutoff: dict[str, Any], cfg: EvalConfig) -> dict[str, Any]:
    """What eval/report.json says when nothing can be measured on the future, and why."""
    reason = cutoff.get("no_future") or (
        "the split holds no commits in eval.splits (" + ", ".join(cfg.splits) + ")"
    )
    return {
        "held_out": False,
        "reason": reason,
        "commits_needed": cutoff.get("commits_needed"),
        "skipped": ["bits_per_byte", *cfg.tasks],
    }


def text_size(docs: list[Any]) -> dict[str, int]:
    """How much held-out text: its records, their bytes and their commits."""
    return {
        "documents": len(docs),
        "bytes": sum(x.n_bytes for x in docs),
        "commits": len({x.sha for x in docs}),
    }


def by_commit(docs: list[Any]) -> list[dict[str, Any]]:
    """Each held-out commit, oldest first: its subject, its bytes and what `xz -9e` makes of
    it alone (the models' own figures are in their `bits_per_byte[split]["by_commit"]`)."""
    texts: dict[str, list[Any]] = {}
    for d in docs:
        texts.setdefault(d.sha, []).append(d)
    data = ["".join(d.text for d in group).encode("utf-8") for group in texts.values()]
    return [
        {
            "sha": sha,
            "subject": group[0].subject,
            "bytes": len(b),
            "xz -9e": round(8 * n / len(b), 4) if b else None,
        }
        for (sha, group), b, n in zip(texts.items(), data, sizes(data), strict=True)
    ]


def evaluate_model(
    layout: RunLayout,
    name: str,
    mc: ModelConfig,
    cfg: EvalConfig,
    docs: dict[str, list[Any]],
    report: dict[str, Any],
    window: int | None,
    bases: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A trained model on every figure; a fine-tuned one's base model first on the same
    figures (bytes, task items, suites), under `base` with the same keys (taken from `bases`
    when another model of the run already measured it, and kept there)."""
    path = layout.model_dir(name)
    if not (path / "config.json").is_file():
        raise RepolmError(
            f"model '{name}' has not been trained ({path} is missing)", "run the train stage first"
        )

    def loaded_and_measured(source: str | Path, label: str) -> dict[str, Any]:
        with measured(report, f"{label}: load"):
            lm = load_model(source, max_len=window)
        figures = measure(lm, label, layout, cfg, docs, report)
        del lm  # before the next model loads
        _free()
        return figures

    result: dict[str, Any] = {"path": str(path)}
    bases = {} if bases is None else bases
    if mc.base is not None and cfg.base_model:
        if mc.base not in bases:
            bases[mc.base] = {"model": mc.base, **loaded_and_measured(mc.base, f"{name} base")}
        result["base"] = bases[mc.base]
    result.update(loaded_and_measured(path, name))
    return result


def measure(
    lm: LoadedModel,
    name: str,
    layout: RunLayout,
    cfg: EvalConfig,
    docs: dict[str, list[Any]],
    report: dict[str, Any],
) -> dict[str, Any]:
    """One model's figures: bits per byte on each future split, the tasks, suites, code
    benchmarks and QA the config asks for; each timed as `NAME: what`."""
    result: dict[str, Any] = {"bits_per_byte": {}, "window": lm.max_len}
    if docs:
        with measured(report, f"{name}: bits per byte"):
            for split, d in docs.items():
                result["bits_per_byte"][split] = score_documents(lm, d)
    if cfg.tasks and docs:
        result["tasks"] = run_tasks(lm, layout, cfg, report, name, list(docs))
    for suite in cfg.suites:
        with measured(report, f"{name}: suite {suite}"):
            result.setdefault("suites", {})[Path(suite).stem] = run_suite(
                lm, resolve_suite(suite, layout.out), cfg.suite_tokens, cfg.batch_size
            )
    code = {"humaneval": cfg.humaneval, "mbpp": cfg.mbpp}
    for bench in (b for b, wanted in code.items() if wanted):
        with measured(report, f"{name}: {bench}"):
            result.setdefault("code", {})[bench] = run_code(lm, bench, cfg)
    if cfg.qa:
        with measured(report, f"{name}: qa"):
            result["qa"] = run_qa(lm, Path(cfg.qa), batch_size=cfg.batch_size)
    return result


def run_code(lm: Any, bench: str, cfg: EvalConfig) -> dict[str, Any]:
    """HumanEval or MBPP: greedy completions run in the sandbox, pass@1."""
    problems = (
        codebench.humaneval_problems(cfg.code_limit)
        if bench == "humaneval"
        else codebench.mbpp_problems(Path(cfg.mbpp or ""), cfg.code_limit)
    )
    samples = codebench.generate_samples(lm, problems, batch_size=cfg.batch_size)
    return codebench.evaluate(problems, samples, ks=(1,))


GENERATING = {"completion", "commit_messages"}  # next_change scores, it does not generate
TASKS = {
    "completion": "repolm.eval.completion:evaluate_completion",
    "next_change": "repolm.eval.next_change:evaluate_next_change",
    "commit_messages": "repolm.eval.messages:evaluate_commit_messages",
}


def run_tasks(
    lm: Any,
    layout: RunLayout,
    cfg: EvalConfig,
    report: dict[str, Any],
    name: str,
    splits: list[str],
) -> dict:
    """The generation tasks on the test split, the later future (val when test isn't
    evaluated), each with its baselines."""
    import importlib

    split = "test" if "test" in splits else splits[0]
    results = {}
    for task in cfg.tasks:
        module, _, func = TASKS[task].partition(":")
        run = getattr(importlib.import_module(module), func)
        with measured(report, f"{name}: {task}"):
            batch = {"batch_size": cfg.batch_size} if task in GENERATING else {}
            results[task] = run(lm, layout.eval_sets_dir, layout.out, split, cfg.max_items, **batch)
            results[task]["samples"] = results[task].get("samples", [])[: cfg.samples]
    return results


@contextlib.contextmanager
def measured(report: dict[str, Any], what: str) -> Iterator[None]:
    """Time and peak memory (process RSS, GPU memory where NVML answers) of one evaluation,
    into report["timings"][what]."""
    t0 = time.monotonic()
    with HardwareMonitor(interval_s=0.25) as monitor:
        yield
    peaks = monitor.peaks()
    entry: dict[str, Any] = {"seconds": round(time.monotonic() - t0, 2)}
    if "rss_bytes" in peaks:
        entry["peak_rss_bytes"] = int(peaks["rss_bytes"])
    gpu = [v for k, v in peaks.items() if k.startswith("gpu") and k.endswith("_memory_bytes")]
    if gpu:
        entry["peak_gpu_memory_bytes"] = int(max(gpu))
    report["timings"][what] = entry
    log.info(f"eval: {what}: {entry['seconds']:.1f} s")


def _free() -> None:
    gc.collect()
    with contextlib.suppress(Exception):
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def summary(report: dict[str, Any]) -> dict[str, Any]:
    """The figures the manifest keeps: each model's bits per byte next to the compressors'."""
    out: dict[str, Any] = {"cutoff": report.get("cutoff", {}).get("cutoff_sha")}
    if "future" in report:
        return {**out, "future": report["future"], "models": {}}
    split = "test" if "test" in report["baselines"] else next(iter(report["baselines"]))
    out["split"] = split
    out["baselines"] = {
        c: {
            "bits_per_byte": b["bits_per_byte"],
            "conditioned_bits_per_byte": b.get("conditioned_bits_per_byte"),
        }
        for c, b in report["baselines"][split].items()
    }
    out["models"] = {}
    for name, m in report["models"].items():
        entry = {"bits_per_byte": m["bits_per_byte"][split]["bits_per_byte"]}
        if "base" in m:
            entry["base_bits_per_byte"] = m["base"]["bits_per_byte"][split]["bits_per_byte"]
        out["models"][name] = entry
    return out


def _line(brief: dict[str, Any]) -> str:
    if "future" in brief:
        return f"no evaluation on the future: {brief['future']['reason']}"
    xz = brief["baselines"].get("xz -9e", {})
    parts = [f"{n} {m['bits_per_byte']:.3f}" for n, m in brief["models"].items()]
    return (
        f"{brief['split']} bits/byte: "
        + ", ".join(parts)
        + f"; xz {xz.get('bits_per_byte', float('nan')):.3f}"
        + (
            f" ({xz['conditioned_bits_per_byte']:.3f} conditioned)"
            if xz.get("conditioned_bits_per_byte") is not None
            else ""
        )
    )
