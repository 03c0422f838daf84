"""The report stage: a made-up run directory rendered to one self-contained HTML page with its
plots, the repository's text escaped, secrets shown by type only, missing stages said so; the
TensorBoard series merged across processes; a real pipeline run; a Chromium screenshot."""

from __future__ import annotations

import html
import importlib.util
import json
import re
import shutil
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from repolm.config import load_config
from repolm.pipeline.registry import REGISTRY
from repolm.report import stage as report_stage
from repolm.report.evaluation import evaluation
from repolm.report.html import ReportInputs, render_report
from repolm.report.stage import merge_runs, read_scalars
from repolm.stage import StageContext

XSS = "<script>alert(1)</script>"
SECRET = "AKIAQ7ZPLANTEDSECRET9"  # only in text the report must never read
SECRET_TYPE = "aws_access_key"
CUTOFF = "2024-03-01T12:00:00+00:00"
DAY = 86400.0


def write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def commits_table(path: Path, messages: list[str], split: bool) -> None:
    from datetime import datetime, timedelta, timezone

    start = datetime(2024, 1, 1, tzinfo=timezone.utc)
    n = len(messages)
    cols: dict[str, Any] = {
        "sha": [f"{i:040x}" for i in range(n)],
        "commit_time": pa.array(
            [start + timedelta(days=3 * i) for i in range(n)], pa.timestamp("ms", tz="UTC")
        ),
        "message": messages,
    }
    if split:
        cols["split"] = ["train"] * (n - 5) + ["val"] * 2 + ["test"] * 3
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(cols), path)


def train_report(name: str, steps: int, base: bool) -> dict[str, Any]:
    loss = [round(8.0 * 0.97**i + 2.0, 4) for i in range(steps)]
    return {
        "name": name,
        "source": "tiny/base" if base else "scratch:tiny",
        "method": "lora" if base else "full",
        "mix": "default",
        "parameters": {"total": 1000, "trainable": 100 if base else 1000},
        "precision": "fp32",
        "device": {"kind": "cpu", "name": "x86_64", "processes": 1},
        "plan": {"total_steps": steps, "warmup_steps": 4, "lr": 0.001},
        "steps": steps,
        "epochs_done": 1.0,
        "tokens_seen": steps * 512,
        "seconds": 12.5,
        "tokens_per_s": 2500.0,
        "tokens_per_s_per_step": [2400.0 + i for i in range(steps)],
        "mfu": None,
        "loss": {"first": loss[0], "last": loss[-1], "per_epoch": [5.0], "per_step": loss},
        "validation": {
            "final": {"step": steps, "loss": 3.21, "perplexity": 24.8, "tokens": 100},
            "best": {"step": steps, "loss": 3.21, "perplexity": 24.8, "tokens": 100},
            "evaluations": [{"step": 10, "loss": 4.5}, {"step": steps, "loss": 3.21}],
            "unigram_loss": 6.54,
        },
        "samples": [
            {
                "step": 10,
                "parse_rate": 0.5,
                "samples": [
                    {"path": "src/app.py", "sample": "def f(:\n", "parses": False},
                    {"path": "src/app.py", "sample": "x = 1\n", "parses": True},
                ],
            },
            {
                "step": steps,
                "parse_rate": 1.0,
                "samples": [
                    {"path": "src/<b>evil</b>.py", "sample": f"print('{XSS}')\n", "parses": True}
                ],
            },
        ],
        "grad_norm": {"min": 0.5, "max": 2.0},
        "lr": {"min": 1e-5, "max": 1e-3},
        "early_stopping": {"stopped": "max_steps", "best_step": steps, "patience": 5},
        "hardware": {"cpu_percent": 190.0, "rss_bytes": 1.5 * 2**30},
    }


def bits(value: float, **by_commit: float) -> dict[str, Any]:
    return {
        "bits_per_byte": value,
        "loss": 2.0,
        "tokens": 100,
        "bytes": 400,
        "by_commit": by_commit,
    }


def task(**metrics: float) -> dict[str, Any]:
    baselines = {"retrieval": {"next_line_em": 0.125, "body_es": 0.3111}}
    return {"split": "test", "n": 4, "metrics": metrics, "baselines": baselines}


def suite(overall: float) -> dict[str, Any]:
    return {
        "overall": overall,
        "counts": {"tests": 5},
        "categories": {"history": {"score": overall, "tests": 5}},
    }


# the held-out commits: (split, sha, subject, bytes, xz -9e on the commit alone)
COMMITS = [
    ("test", "a" * 40, "Add the parser", 2000, 3.1),
    ("test", "b" * 40, "Fix a typo", 500, 4.4),
    ("test", "c" * 40, f"New subsystem {XSS}", 1500, 1.9),
    ("val", "d" * 40, "Tidy", 1000, 3.3),
    ("val", "e" * 40, "Docs", 2000, 3.2),
]


def eval_report() -> dict[str, Any]:
    completion = {
        "split": "test",
        "n": 4,
        "metrics": {"next_line_em": 0.25, "body_es": 0.4567},
        "baselines": {"retrieval": {"next_line_em": 0.125, "body_es": 0.3111}},
        "samples": [
            {
                "path": "src/<evil>.py",
                "name": "handler",
                "change_type": "new_function",
                "seen_in_train": False,
                "input": "def handler(request):\n",
                "model": f"    return '{XSS}'\n",
                "reference": "    return render(request)\n",
                "baselines": {"retrieval": "    return None\n"},
            }
        ],
        "n_unseen": 3,
        "fim": True,
        "seconds": 1.0,
    }
    messages = {
        "split": "test",
        "n": 2,
        "metrics": {"subject_rouge_l": 0.3333, "subject_bleu": 12.5},
        "baselines": {"template": {"subject_rouge_l": 0.2, "subject_bleu": 5.25}},
        "samples": [
            {
                "sha": "ab" * 20,
                "input": "src/app.py",
                "model": "Fix the handler",
                "reference": f"Render {XSS} safely",
                "baselines": {"template": "Update"},
            }
        ],
    }
    next_change = {
        "split": "test",
        "n": 1,
        "metrics": {"recall@1": 0.0, "recall@5": 1.0},
        "baselines": {"recency": {"recall@1": 1.0, "recall@5": 1.0}},
        "samples": [
            {
                "sha": "cd" * 20,
                "input": "Fix the parser",
                "model": ["a.py", "b.py"],
                "reference": ["b.py"],
                "baselines": {"recency": ["b.py", "c.py"]},
            }
        ],
    }
    main = {
        "bits_per_byte": {
            "test": bits(1.2345, **{"a" * 40: 1.5, "b" * 40: 3.75, "c" * 40: 2.25}),
            "val": bits(1.4321, **{"d" * 40: 1.25, "e" * 40: 1.5}),
        },
        "tasks": {
            "completion": completion,
            "next_change": next_change,
            "commit_messages": messages,
        },
        "suites": {
            "core": {
                "overall": 0.55,
                "counts": {"tests": 5},
                "categories": {
                    "history": {"score": 0.6, "tests": 3},
                    "api": {"score": 0.5, "tests": 2},
                },
            }
        },
        "code": {
            "humaneval": {"problems": 5, "pass@1": 0.2, "statuses": {"passed": 1, "failed": 4}}
        },
        "qa": {
            "n": 2,
            "exact_match": 0.5,
            "f1": 0.625,
            "citation_coverage": None,
            "samples": [{"question": "Where is X?", "answer": "in y", "reference": ["y"]}],
        },
    }
    ft = {  # a fine-tuned model: its base measured on the same figures
        "bits_per_byte": {"test": bits(1.1111), "val": bits(1.3333)},
        "tasks": {"completion": task(next_line_em=0.375, body_es=0.5)},
        "suites": {"core": suite(61.25)},
        "base": {
            "model": "tiny/base",
            "bits_per_byte": {"test": bits(1.9876), "val": bits(2.0123)},
            "tasks": {"completion": task(next_line_em=0.0625, body_es=0.5)},
            "suites": {"core": suite(40.5)},
        },
    }
    compressors = {
        s: {
            "xz -9e": {"bits_per_byte": b, "conditioned_bits_per_byte": b / 3},
            "zstd -19": {"bits_per_byte": b + 0.01},
        }
        for s, b in (("test", 2.7182), ("val", 2.5066))
    }
    return {
        "cutoff": {"cutoff_sha": "c" * 40, "cutoff_time": CUTOFF},
        "text": {
            "test": {"documents": 3, "bytes": 4000, "commits": 3},
            "val": {"documents": 2, "bytes": 3000, "commits": 2},
            "train": {"bytes": 10**6, "conditioning_bytes": 10**6},
        },
        "timings": {
            "compressors": {"seconds": 1.5, "peak_rss_bytes": 2**30},
            "main: bits per byte": {
                "seconds": 2.5,
                "peak_rss_bytes": 2**31,
                "peak_gpu_memory_bytes": 2**32,
            },
        },
        "baselines": compressors,
        "models": {"main": main, "ft": ft},
        "seconds": 9.5,
        "commits": {
            split: [
                {"sha": sha, "subject": subject, "bytes": n, "xz -9e": xz}
                for s, sha, subject, n, xz in COMMITS
                if s == split
            ]
            for split in ("test", "val")
        },
    }


def tensorboard(path: Path, steps: int) -> None:
    from tensorboardX import SummaryWriter

    w = SummaryWriter(logdir=str(path))
    for step in range(1, steps + 1):
        w.add_scalar("train/loss", 5.0, step)
        w.add_scalar("train/lr", 1e-3 * min(1.0, step / 4), step)
        w.add_scalar("hardware/cpu_percent", 150.0 + step, step)
        w.add_scalar("hardware/rss_bytes", 2**30 + step * 2**20, step)
    w.close()


def make_run(out: Path, steps: int = 30) -> Path:
    """A run directory through eval with small made-up numbers: models main (TensorBoard
    events) and ft (a LoRA of a base model, none)."""
    messages = [f"commit {i}" for i in range(12)] + [f"leak {SECRET} {XSS}"]
    commits_table(out / "mine" / "commits.parquet", messages, split=False)  # not scrubbed
    scrubbed = [m.replace(SECRET, "<AWS_KEY>") for m in messages]
    commits_table(out / "filter" / "commits.parquet", scrubbed, split=True)
    write_json(
        out / "manifest.json",
        {
            "repolm_version": "0.1.0",
            "python": "3.11",
            "platform": "Linux",
            "repo_path": "/r",
            "repository": {
                "path": f"/src/{XSS}",
                "commits": 13,
                "merges": 1,
                "branches": 2,
                "tags": 0,
                "authors": 2,
                "head": "a" * 40,
                "head_ref": "refs/heads/main",
                "first_commit_time": "2024-01-01T00:00:00+00:00",
                "last_commit_time": "2024-02-06T00:00:00+00:00",
                "languages_at_head": {"Python": 9000, "Markdown": 1000},
            },
            "split": {
                "cutoff_sha": "c" * 40,
                "cutoff_time": CUTOFF,
                "val_end_time": "2024-03-05T00:00:00+00:00",
                "commits": {"train": 8, "val": 2, "test": 3},
            },
            "stages": {
                "mine": {"status": "done", "seconds": 0.5, "summary": "13 commits"},
                "train": {"status": "done", "seconds": 61.0, "summary": "2 models"},
            },
        },
    )
    write_json(
        out / "filter" / "stats.json",
        {
            "files": {"total": 10, "kept": 7, "excluded": {"vendored": 2, "generated": 1}},
            "changes": {"total": 40, "kept": 38, "excluded": {"binary": 2}},
            "commits": {"total": 13, "author_emails": "hash", "author_names": "keep"},
            "secrets": {SECRET_TYPE: 1, "email": 3},
        },
    )
    write_json(
        out / "dataset" / "stats.json",
        {
            "seq_len": 64,
            "vocab_size": 400,
            "sequences": {"train": 90, "val": 5, "test": 6},
            "tokens": {
                "train": {"total": 5760, "file": 4000, "commit": 1760},
                "val": {"total": 320, "commit": 320},
                "test": {"total": 384, "commit": 384},
            },
            "padding": {"train": 0.01, "val": 0.2, "test": 0.1},
            "mix": {
                "wanted": {"files": 0.6, "commits": 0.4},
                "realised": {"files": 0.69, "commits": 0.31},
            },
            "eval": {
                "completion": 4,
                "commit_messages": 2,
                "completion_secrets_scrubbed": {"password": 1},
            },
        },
    )
    write_json(
        out / "train" / "report.json",
        {
            "models": {
                "main": train_report("main", steps, base=False),
                "ft": train_report("ft", 12, True),
            }
        },
    )
    tensorboard(out / "train" / "main" / "tensorboard", steps)
    write_json(out / "eval" / "report.json", eval_report())
    return out


def render(out: Path) -> str:
    return report_stage.render(out)


def run_stage(out: Path) -> str:
    ctx = StageContext(out=out, config=load_config().config, repo_path=out)
    result = report_stage.run_stage(ctx)
    page = (out / "report.html").read_text(encoding="utf-8")
    assert result.stats["bytes"] == len(page.encode()) and result.stats["plots"] > 0
    return page


def assert_self_contained(page: str) -> None:
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:|//|file:)""", page, re.I)
    assert "<script" not in page.lower() and "<link" not in page.lower()
    assert "@import" not in page and "src=" not in page
    assert set(re.findall(r'(?:href="|url\()(.)', page)) == {"#"}  # figures' own parts only
    assert "http://" not in page and "https://" not in page  # no URL in these inputs at all


# -- the page ---------------------------------------------------------------------------------


def test_report_is_self_contained_with_its_plots_and_numbers(tmp_path: Path) -> None:
    page = run_stage(make_run(tmp_path / "run"))
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert_self_contained(page)
    # commits, main: loss + lr + throughput + hardware, ft: loss + throughput, bits per byte,
    # ft next to its base
    assert page.count("<svg") == 9 == page.count("</svg>")
    for section in ("overview", "data", "training", "evaluation", "samples", "timings"):
        assert f'<section id="{section}">' in page
    for number in ("1.234", "1.432", "1.111", "1.988", "2.718", "0.906", "2.728", "2.507"):
        assert number in page  # models, base, xz, xz conditioned, zstd (3 decimals)
    assert "its base tiny/base" in page and "after 976.6 KiB of training text" in page
    for text in (
        "next_line_em",
        "0.4567",
        "baseline retrieval",
        "subject_bleu",
        "12.5",
        "Suite: core",
        "pass@1 20.0%",
        "Where is X?",
        "0.625",
        "n unseen 3",
    ):
        assert text in page, text
    assert "unigram baseline (6.540)" not in page  # glyphs are paths: figure text is not text
    assert "6.54" in page  # ...so the figures' numbers are in the tables too
    assert "<pre>  a.py\n✓ b.py</pre>" in page and "<pre>b.py</pre>" in page  # next change hits
    assert "1/2" in page and "1/1" in page and 'class="yes">parses' in page  # parse flags
    assert "4.0 GiB" in page and "2.5 s" in page  # eval timings: GPU memory, seconds
    # each future commit, hardest first, rows where the model is behind xz marked
    part = page[page.index("Each future commit") :]
    part = part[: part.index("</table>")]
    assert "model main beats xz on 4 of 5" in part and "model ft beats xz on 0 of 5" in part
    order = [m[:10] for m in re.findall(r"<code>([a-e]{10})</code>", part)]
    assert order == ["b" * 10, "c" * 10, "a" * 10, "e" * 10, "d" * 10]
    assert part.count('<tr class="worse">') == 1 and "3.750" in part and "1.900" in part
    worse = re.search(r'<tr class="worse">(.*?)</tr>', part).group(1)
    assert "c" * 10 in worse and "New subsystem &lt;" in worse
    ids = re.findall(r'\bid="([^"]+)"', page)
    assert len(ids) == len(set(ids))  # figures' ids never clash


def test_a_fine_tuned_model_is_shown_next_to_its_base(tmp_path: Path) -> None:
    page = render(make_run(tmp_path / "run"))
    part = page[page.index('<section id="evaluation">') : page.index('<section id="samples">')]
    # bits per byte: the base's row, the difference, the verdict, how much text was measured
    assert "its base tiny/base</td><td class=n>1.988</td><td class=n>2.012</td>" in part
    assert "ft − its base</td><td class=n>-0.877</td><td class=n>-0.679</td>" in part
    assert "ft: fewer bits than its base on test (1.111 vs 1.988)" in part
    assert "measured on test: 3 commits, 4,000 bytes; val: 2 commits, 3,000 bytes" in part
    assert "main − its base" not in part and "main: fewer bits" not in part  # main has none
    # the plot of ft next to its base, then the tasks and suites with the base's column
    plot = part[part.index("<h3>Model ft next to its base tiny/base</h3>") :]
    assert plot.index("<svg") < plot.index("</svg>") < plot.index("<h3>Each future commit")
    completion = part[part.index("<h3>Task: completion") : part.index("<h3>Task: next change")]
    head = re.findall(r"<th class=n>(.*?)</th>", completion)
    assert head == [
        "model <b>main</b>",
        "model <b>ft</b>",
        "its base tiny/base",
        "ft − base",
        "baseline retrieval",
    ]
    assert "<td>next_line_em</td><td class=n>0.25</td><td class=n>0.375</td>" in completion
    assert "<td class=n>0.0625</td><td class=n>+0.3125</td><td class=n>0.125</td>" in completion
    suites = part[part.index("<h3>Suite: core") :]
    assert "<td class=n><b>61.25</b></td><td class=n><b>40.5</b></td>" in suites
    assert "<td class=n><b>+20.75</b></td>" in suites
    # without a base anywhere the tables are as they were
    report = eval_report()
    del report["models"]["ft"]
    bare = evaluation(report)
    assert "its base" not in bare and "− base" not in bare and "next to its base" not in bare
    assert bare.count("<svg") == 1


def test_the_repository_text_is_escaped_and_secrets_shown_by_type(tmp_path: Path) -> None:
    page = render(make_run(tmp_path / "run"))
    assert XSS not in page and "<b>evil</b>" not in page
    escaped = html.escape(XSS)
    assert escaped in page  # repository path, samples, the real commit message
    assert page.count(escaped) >= 4
    assert html.escape("src/<evil>.py") in page
    assert SECRET not in page and SECRET[:8] not in page
    assert SECRET_TYPE in page and "password" in page  # filter stats, completion set


def test_a_run_without_eval_says_so_and_shows_the_rest(tmp_path: Path) -> None:
    out = make_run(tmp_path / "run")
    (out / "eval" / "report.json").unlink()
    page = run_stage(out)
    assert_self_contained(page)
    assert page.count("<svg") == 7  # no bits per byte
    assert "No eval/report.json in this run: the eval stage has not run" in page
    assert "Not in this run yet: eval/report.json" in page


def test_a_run_stopped_after_mining_renders(tmp_path: Path) -> None:
    out = tmp_path / "run"
    commits_table(out / "mine" / "commits.parquet", [f"c {i}" for i in range(8)], split=False)
    write_json(out / "manifest.json", {"repo_path": "/r", "repository": {"commits": 8}})
    page = run_stage(out)
    assert page.count("<svg") == 1  # the history
    for file in ("filter/stats.json", "dataset/stats.json", "train/report.json"):
        assert f"No {file} in this run" in page
    bare = render_report(ReportInputs(run_dir="/nowhere"))
    assert "No manifest.json in this run" in bare and "<svg" not in bare


def test_an_unreadable_input_is_named_not_fatal(tmp_path: Path) -> None:
    out = make_run(tmp_path / "run")
    (out / "train" / "report.json").write_text("{not json")
    page = render(out)
    assert "Could not read: train/report.json" in page and "No train/report.json" in page


# -- TensorBoard --------------------------------------------------------------------------------


def test_event_files_of_one_run_are_merged_across_restarts() -> None:
    old = [("train/loss", 1.0, 9.0), ("train/loss", 2.0, 8.0), ("train/loss", 3.0, 7.0)]
    resumed = [
        ("hardware/cpu_percent", 2.0, 50.0),
        ("train/loss", 3.0, 6.5),
        ("train/loss", 4.0, 6.0),
    ]
    merged = merge_runs([old, resumed])
    assert merged["train/loss"] == [(1.0, 9.0), (2.0, 8.0), (3.0, 6.5), (4.0, 6.0)]
    assert merged["hardware/cpu_percent"] == [(2.0, 50.0)]
    again = [("train/loss", 1.0, 4.0)]  # another configuration, started over
    assert merge_runs([old, resumed, again, []]) == {"train/loss": [(1.0, 4.0)]}


def test_scalars_are_read_from_event_files(tmp_path: Path) -> None:
    tensorboard(tmp_path / "tb", 5)
    scalars = read_scalars(tmp_path / "tb")
    assert [s for s, _ in scalars["train/lr"]] == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert scalars["train/lr"][-1][1] == pytest.approx(1e-3)
    assert scalars["hardware/rss_bytes"][0][1] == 2**30 + 2**20
    assert read_scalars(tmp_path / "none") == {}
    # a process killed while writing leaves a record cut short: the records before it count
    (f,) = (tmp_path / "tb").glob("events.out.tfevents.*")
    f.write_bytes(f.read_bytes()[:-7])
    assert [s for s, _ in read_scalars(tmp_path / "tb")["train/lr"]] == [1.0, 2.0, 3.0, 4.0, 5.0]


# -- the stage in the pipeline ------------------------------------------------------------------


def test_the_stage_runs_after_eval_and_reads_what_it_shows() -> None:
    names = list(REGISTRY)
    stage = REGISTRY["report"]
    assert names.index("report") > names.index("eval")
    assert {"filter", "build", "train", "eval"} <= set(stage.inputs)
    assert stage.outputs == ("report.html",)


@pytest.mark.slow
def test_a_pipeline_run_writes_the_report(tmp_path: Path) -> None:
    from conftest import TINY_MODEL, GitRepo
    from repolm.pipeline.runner import run_pipeline

    r = GitRepo(tmp_path / "repo")
    for i in range(20):
        r.write(
            f"calc/op{i % 4}.py",
            "".join(f"def op_{i}_{k}(a, b):\n    return a * {k} + b\n\n\n" for k in range(3)),
        )
        r.commit(f"op {i}: {XSS}" if i == 18 else f"op {i}: add step {i}")
    overrides = [
        "tokenize.vocab_size=400",
        "build.seq_len=64",
        "build.batch_size=4",
        "split.test_fraction=0.15",
        "split.val_fraction=0.1",
        *TINY_MODEL,
        "train.micro_batch=4",
        "train.max_steps=12",
        "train.eval_every=6",
        "train.eval_sequences=4",
        "train.hardware_every_s=0.2",
        "eval.suites=[]",
    ]
    out = tmp_path / "run"
    outcomes = run_pipeline(out, r.path, load_config(overrides=overrides), only=["report"])
    assert {o.stage: o.status for o in outcomes}["report"] == "done"
    page = (out / "report.html").read_text(encoding="utf-8")
    assert_self_contained(page)
    assert page.count("<svg") >= 5 and XSS not in page
    eval_report = json.loads((out / "eval" / "report.json").read_text())
    value = eval_report["models"]["main"]["bits_per_byte"]["test"]["bits_per_byte"]
    assert f"{value:.3f}" in page


# -- it renders ---------------------------------------------------------------------------------


def _render_script() -> Any:
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "render_report.py"
    spec = importlib.util.spec_from_file_location("render_report", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(shutil.which("chromium") is None, reason="needs Chromium (apt: chromium)")
def test_chromium_renders_the_report(tmp_path: Path) -> None:
    from PIL import Image

    out = make_run(tmp_path / "run")
    run_stage(out)
    png = tmp_path / "report.png"
    _render_script().screenshot(out / "report.html", png, width=1000, height=2400)
    with Image.open(png) as im:
        assert im.size == (1000, 2400)
        colors = im.convert("RGB").resize((250, 600)).getcolors(maxcolors=1 << 16)
    assert colors is not None and len(colors) > 50  # text, tables and plots, not a blank page
