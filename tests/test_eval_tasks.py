"""The evaluations on the future (completion, next change, commit messages): the unit cut rules
on hand cases, the baselines on hand-written tables with hand-computed scores, the prompts equal
to what the build stage trained on, and every task end to end on a pipeline run with a tiny
untrained Llama (and without a model)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import calc_run
from repolm.dataset.evalsets import SCHEMAS
from repolm.eval import completion as cp
from repolm.eval import next_change as nc
from repolm.eval.messages import evaluate_commit_messages, template_message
from repolm.eval.metrics import rouge_l
from repolm.eval.tasks import spread
from repolm.formats import documents as dm
from repolm.syntax.boundaries import plain_body, unit_end, unit_stop

T0 = datetime(2024, 1, 1, tzinfo=timezone.utc)


# -- where a unit ends ----------------------------------------------------------------------

PYTHON_UNIT = '''@decorator(
    x=1,
)
def f(a,
b):
    """Doc with a line at column 0:
def not_the_end():
"""
    return a
'''


RUST_UNIT = """/// Doc with { a brace
#[test]
fn f<'a>(x: &'a str) -> &'a str {
    let c = '{';
    let s = "}"; // }
    if x.is_empty() { return x; }
    x
}
"""
METHOD = "    def m(self):\n        return [\n    1]\n"
JS_TEST = "it('adds {', () => {\n  expect(add(1, 2)).toBe(3);\n});\n"


@pytest.mark.parametrize(
    ("language", "unit", "after"),
    [
        (
            "Python",
            PYTHON_UNIT,
            "    # trailing comments are left out\n# as is this one\n\ndef g():\n",
        ),
        ("Python", METHOD, "\n    def n(self):\n        pass\n"),
        ("Python", "def f(): return 1\n", "def g(): pass\n"),
        ("Rust", RUST_UNIT, "\nfn g() {}\n"),
        ("JavaScript", JS_TEST, "\nit('b', () => {});\n"),
        ("JavaScript", "function f({a, b}) {\n  return `${a}}`;\n}\n", "function g() {}\n"),
        ("JavaScript", "const f = (a) =>\n  a + 1;\n", "const g = 2;\n"),
        ("Java", '@SuppressWarnings({"a"})\nvoid f() {\n  /* } */\n  x();\n}\n', "void g() {}\n"),
        ("Go", "func (r *T) F() string {\n\treturn `}`\n}\n", "\nfunc G() {}\n"),
    ],
)
def test_unit_end_cuts_after_the_unit(language: str, unit: str, after: str) -> None:
    assert unit_end(unit + after, language) == len(unit)


def test_unit_end_keeps_what_never_ends_and_falls_back_to_indentation() -> None:
    assert unit_end("fn f() {\n    loop {\n", "Rust") == len("fn f() {\n    loop {\n")
    # braces never balance: the first line back at the unit's indentation ends it, a closer kept
    text = "fn f() {\n    let x = (1;\n}\nfn g() {}\n"
    assert unit_end(text, "Rust") == len("fn f() {\n    let x = (1;\n}\n")
    assert unit_end("", "Python") == 0


def test_plain_body_is_the_generation_after_the_given_first_line() -> None:
    first = "def f(a):\n"
    assert plain_body(first, "\n    return a\n\n\ndef g():\n", "Python") == "    return a\n"
    # the model may finish the first line itself: that part is not body
    assert plain_body(first, " # ok\n    return a\nx = 1\n", "Python") == "    return a\n"
    assert plain_body("fn f() {\n", "\n    1\n}\nfn g() {}", "Rust") == "    1\n}\n"


def test_generation_stops_where_plain_body_cuts() -> None:
    first, generated = "def f(a):\n", "\n    return a\n\n\ndef g():\n    pass\n"
    for lead, text in (("", generated), ("\n", generated[1:])):  # plain, FIM
        rule = unit_stop(first.rstrip() + lead, "Python")
        ends = [n for n in range(len(text) + 1) if rule(text[:n]) is not None]
        assert ends and all(rule(text[:n]) is None for n in range(ends[0]))  # once, then on
        assert plain_body(first, lead + text[: rule(text)], "Python") == "    return a\n"
        assert plain_body(first, lead + text[: ends[0]], "Python") == "    return a\n"
    rust = unit_stop("fn f() {", "Rust")
    assert rust("\n    1\n}") is None and rust("\n    1\n}\nfn g") == len("\n    1\n}\n")


def test_fim_prompt_is_the_training_builders_psm() -> None:
    segments = dm.fim_prompt("src/a.py", "Python", "x = 1\ndef f():\n", "\ny = 2\n")
    assert segments == [
        dm.Tok("<|file|>"),
        "src/a.py\n",
        dm.Tok("<|module|>"),
        "a\n",
        dm.Tok("<|fim_prefix|>"),
        "x = 1\ndef f():\n",
        dm.Tok("<|fim_suffix|>"),
        "\ny = 2\n",
        dm.Tok("<|fim_middle|>"),
    ]
    assert dm.plain_prompt("a.py", "Python", "def f():\n")[-1] == "def f():"


# -- hand-written inputs --------------------------------------------------------------------


def write(path: Path, rows: list[dict[str, Any]], schema: pa.Schema | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)


def completion_row(**kw: Any) -> dict[str, Any]:
    row = {
        "sha": "f1",
        "time": T0,
        "split": "test",
        "path": "src/p.py",
        "language": "Python",
        "kind": "function",
        "name": "x",
        "qualified_name": "x",
        "change_type": "new_function",
        "start_line": 1,
        "end_line": 2,
        "prefix": "",
        "target": "",
        "suffix": "",
        "seen_in_train": False,
    }
    return row | kw


SNAPSHOT_UNITS = [
    "def parse_header(line):\n    key, _, value = line.partition(':')\n    return key, value\n",
    "def render_page(title, body):\n    return f'<h1>{title}</h1>{body}'\n",
    "def parse_body(text):\n    return text.strip()\n",
]


def test_retrieval_finds_the_most_similar_function(tmp_path: Path) -> None:
    index = cp.SnapshotIndex(
        [{"language": "Python", "kind": "function", "text": t} for t in SNAPSHOT_UNITS]
        + [{"language": "Rust", "kind": "function", "text": "fn parse_header() {}\n"}]
    )
    query = cp.retrieval_query("import re\n", "def parse_header(raw_line):\n")
    assert index.most_similar("Python", query) == SNAPSHOT_UNITS[0]
    assert (
        index.most_similar("Python", cp.code_terms("def render_page(t, b):")) == SNAPSHOT_UNITS[1]
    )
    assert index.most_similar("Go", query) is None
    assert cp.code_terms("getUserID x_y") == ["getuserid", "get", "user", "id", "x_y"]
    assert cp.reindent("def f():\n    return 1\n", "    ") == "    def f():\n        return 1\n"


def test_completion_baseline_on_hand_tables(tmp_path: Path) -> None:
    run, eval_dir = tmp_path / "run", tmp_path / "run" / "dataset" / "eval"
    units = [
        {"source": "snapshot", "language": "Python", "kind": "function", "text": t}
        for t in SNAPSHOT_UNITS
    ]
    section = {"source": "snapshot", "language": "Markdown", "kind": "section", "text": "# x\n"}
    write(run / "filter" / "chunks.parquet", [*units, section])
    write(
        eval_dir / "completion.parquet",
        [
            # modified, its body unchanged: the snapshot's version is retrieved, moved to a method
            completion_row(
                target="    def parse_header(self, line):\n        key, _, value = "
                "line.partition(':')\n        return key, value\n",
                prefix="class P:\n",
                change_type="modified_function",
                seen_in_train=True,
            ),
            completion_row(target="def render_page(title, body):\n    return title + body\n"),
            completion_row(target="def one(): return 1\n"),  # nothing after its first line
            completion_row(target="def other():\n    pass\n", split="val"),
        ],
        SCHEMAS["completion"],
    )
    result = cp.evaluate_completion(None, eval_dir, run, split="test")
    assert "metrics" not in result and result["n"] == 2 and result["n_unseen"] == 1
    scores = result["baselines"]["retrieval"]
    assert scores["body_em"] == 0.5 and scores["next_line_em"] == 0.5
    assert scores["unseen_body_em"] == 0.0 and scores["unseen_next_line_em"] == 0.0
    # the same names in another order of text: identifier match sees what body_em does not
    assert 0 < scores["unseen_body_es"] < 1 and scores["identifier_em"] == 1.0
    sample = result["samples"][0]
    assert sample["baselines"]["retrieval"] == sample["reference"]
    assert sample["reference"].startswith("        key, _, value")
    assert set(result) == {"split", "n", "baselines", "samples", "seconds", "n_unseen", "fim"}


# next change: commits c1..c4 (training), then F and G (test)
A, B, C, D, E, Z = (
    "src/parser.py",
    "docs/guide.md",
    "src/lexer.py",
    "setup.py",
    "old.py",
    "vendor/zlib.c",
)
HISTORY = [  # sha, message, [(path, status)]
    ("c1", "start", [(A, "added"), (B, "added"), (E, "added")]),
    ("c2", "lexer", [(A, "modified"), (C, "added")]),
    ("m1", "merge", [(A, "modified")]),  # a merge: left out of the history
    ("c3", "guide", [(B, "modified"), (D, "added"), (E, "deleted")]),
    ("c4", "setup", [(D, "modified")]),
    ("F", "Speed up the lexer", [(A, "modified"), (C, "modified")]),
    ("G", "Document the setup", [(B, "modified"), (D, "modified")]),
]


def write_history(run: Path) -> None:
    commits, changes = [], []
    for n, (sha, message, files) in enumerate(HISTORY):
        commits.append(
            {
                "sha": sha,
                "author_name": "Ada",
                "commit_time": T0 + timedelta(hours=n),
                "message": message,
                "split": "test" if sha in "FG" else "train",
                "is_merge": sha == "m1",
            }
        )
        for path, status in files:
            changes.append(
                {
                    "sha": sha,
                    "path": path,
                    "old_path": None,
                    "status": status,
                    "patch": f"diff --git a/{path} b/{path}\n@@ -1 +1 @@\n-a\n+b\n",
                    "language": None,
                    "additions": 1,
                    "deletions": 1,
                }
            )
    write(run / "filter" / "commits.parquet", commits)
    write(run / "filter" / "changes.parquet", changes)
    write(run / "filter" / "files.parquet", [{"path": p} for p in (A, B, C, D, Z)])


def test_next_change_baselines_hand_computed(tmp_path: Path) -> None:
    run, eval_dir = tmp_path / "run", tmp_path / "run" / "dataset" / "eval"
    write_history(run)
    times = {sha: T0 + timedelta(hours=n) for n, (sha, _, _) in enumerate(HISTORY)}
    write(
        eval_dir / "next_change.parquet",
        [
            {
                "sha": "F",
                "time": times["F"],
                "split": "test",
                "message": "Speed up the lexer",
                "files": [C, A],
                "previous_shas": ["c4", "c3"],
                "previous_messages": ["setup", "guide"],
                "previous_files": [[D], [B, D, E]],
            },
            {
                "sha": "G",
                "time": times["G"],
                "split": "test",
                "message": "Document the setup",
                "files": [B, D],
                "previous_shas": ["F"],
                "previous_messages": ["Speed up the lexer"],
                "previous_files": [[C, A]],
            },
        ],
        SCHEMAS["next_change"],
    )
    result = nc.evaluate_next_change(None, eval_dir, run, split="test")
    assert result["n"] == 2 and "metrics" not in result
    # F: recency D, B, (C, A: one commit, by path), then Z the history never changed; E deleted
    #    co-change with D: D 2 (c3, c4), B 1 (c3), E dead -> [D, B]; overlap "lexer" -> [C]
    # G: recency C, A, D, B, Z; co-change with C and A: A 3+2, C 2+2, B 1 -> [A, C, B];
    #    overlap "setup" -> [D]
    samples = result["samples"]
    assert samples[0]["baselines"] == {
        "recency": [D, B, C, A, Z],
        "co_change": [D, B],
        "name_overlap": [C],
    }
    assert samples[1]["baselines"] == {
        "recency": [C, A, D, B, Z],
        "co_change": [A, C, B],
        "name_overlap": [D],
    }
    assert result["baselines"] == {
        "recency": {"recall@1": 0.0, "recall@5": 1.0, "recall@10": 1.0},
        "co_change": {"recall@1": 0.0, "recall@5": 0.25, "recall@10": 0.25},
        "name_overlap": {"recall@1": 0.5, "recall@5": 0.5, "recall@10": 0.5},
    }
    empty = nc.evaluate_next_change(None, eval_dir, run, split="val")  # no commit there
    assert empty["n"] == 0 and empty["baselines"]["recency"]["recall@1"] is None
    with pytest.raises(ValueError, match="split"):
        nc.evaluate_next_change(None, eval_dir, run, split="train")


def test_co_change_leaves_out_large_commits_and_pool_takes_rankings_in_turn(monkeypatch) -> None:
    history = nc.History(
        shas=["a", "b"],
        times=[T0, T0],
        authors=[None, None],
        changes=[
            [("x", "added"), ("y", "added"), ("z", "added")],
            [("x", "modified"), ("y", "modified")],
        ],
        snapshot=[],
    )
    monkeypatch.setattr(nc, "MAX_COCHANGE_FILES", 2)
    sweep = nc.Sweep(history)
    sweep.advance(2)
    rank = {p: k for k, p in enumerate(sweep.recency())}
    assert sweep.recency() == ["x", "y", "z"]
    assert sweep.co_change(["x"], rank) == ["x", "y"]  # z only in the 3-file commit
    assert nc.candidate_pool([["a", "b", "c"], ["b", "d"], []], 3) == ["a", "b", "d"]
    assert nc.candidate_pool([["a"], ["a"]], 5) == ["a"]


def test_commit_message_baselines_on_hand_tables(tmp_path: Path) -> None:
    run, eval_dir = tmp_path / "run", tmp_path / "run" / "dataset" / "eval"
    write_history(run)
    write(
        eval_dir / "commit_messages.parquet",
        [
            {"sha": sha, "time": T0, "split": "test", "diff": "", "message": msg}
            for sha, msg in (("F", "Update parser.py and lexer.py"), ("G", "Document the setup"))
        ],
        SCHEMAS["commit_messages"],
    )
    result = evaluate_commit_messages(None, eval_dir, run, split="test")
    assert result["n"] == 2
    outputs = [s["baselines"] for s in result["samples"]]
    assert outputs == [
        {"template": "Update parser.py and lexer.py", "previous_message": "setup"},
        {"template": "Update guide.md and setup.py", "previous_message": "Speed up the lexer"},
    ]  # the merge m1 is not "the commit before" c3's successors
    template = result["baselines"]["template"]
    expected = (1.0 + rouge_l("Update guide.md and setup.py", "Document the setup")) / 2
    assert template["subject_rouge_l"] == round(expected, 4)
    assert template["message_bleu"] > result["baselines"]["previous_message"]["message_bleu"]
    changes = [
        {"path": "a/x.py", "status": "added"},
        {"path": "y.py", "status": "modified"},
        {"path": "b/x.py", "status": "added"},
    ]
    assert template_message(changes) == "Add x.py, update y.py"
    many = [{"path": f"f{i}.py", "status": "deleted"} for i in range(5)]
    assert template_message(many) == "Remove f0.py, f1.py, f2.py and 2 more files"
    assert spread(list(range(10)), 3) == [0, 3, 6] and spread([1], 5) == [1]
    empty = evaluate_commit_messages(None, eval_dir, run, split="val")
    assert empty["n"] == 0 and empty["baselines"]["template"]["message_bleu"] is None


# -- end to end on a pipeline run -----------------------------------------------------------

DATA = [
    "tokenize.vocab_size=400",
    "build.seq_len=128",
    "split.test_fraction=0.2",
    "split.val_fraction=0.1",
]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run directory through build, and a tiny untrained Llama with its tokenizer in it."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    _, run = calc_run(tmp_path_factory, "tasks", DATA, "build", commits=16, files=4, variants=2)
    root = run.parent
    tok = AutoTokenizer.from_pretrained(root / "run" / "tokenizer")
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=256,
    )
    LlamaForCausalLM(config).save_pretrained(root / "model")
    tok.save_pretrained(root / "model")
    return root


def test_prompts_are_the_training_documents(built: Path) -> None:
    """The describe prompt is the build stage's instruction pair; the next-change header opens
    the commit records of the held-out sequences."""
    from repolm.eval import messages
    from repolm.filter.outputs import change_types
    from repolm.lm import load_model

    run = built / "run"
    lm = load_model(built / "model")
    lm.max_len = 4096  # whole diffs (only prompts are built here)
    pairs = {
        r["sha"]: r
        for r in pq.read_table(run / "dataset" / "instructions" / "test.parquet").to_pylist()
        if r["kind"] == "describe"
    }
    rows = pq.read_table(run / "dataset" / "eval" / "commit_messages.parquet").to_pylist()
    changes, _ = messages._history(run / "filter", [r["sha"] for r in rows])
    types = change_types(run / "filter")
    checked = 0
    for r in rows:
        if r["sha"] in pairs:
            sections = [
                messages.file_section(c, types.get((r["sha"], c["path"]), []), 32000)
                for c in changes[r["sha"]]
            ]
            ids = messages.describe_prompt(lm, sections, 64)
            assert lm.decode(ids) == pairs[r["sha"]]["prompt"] + "<|message|>"
            checked += 1
    assert checked >= 2
    history = nc.History.read(run / "filter")
    shards = " ".join(pq.read_table(run / "dataset" / "test").column("text").to_pylist())
    row = pq.read_table(run / "dataset" / "eval" / "next_change.parquet").to_pylist()[-1]
    at = history.position[row["sha"]]
    header = [
        *dm.commit_header(history.authors[at], row["time"], row["message"]),
        dm.Tok("<|file|>"),
    ]
    assert lm.decode(lm.encode_segments(header)) + row["files"][0] + "\n" in shards


def test_every_task_end_to_end_with_and_without_a_model(built: Path) -> None:
    from transformers import AutoTokenizer

    from repolm.lm import load_model

    run, eval_dir = built / "run", built / "run" / "dataset" / "eval"
    lm = load_model(built / "model")
    assert "<|fim_prefix|>" in lm.special and lm.fim  # no record: its tokens are trusted
    tasks = [cp.evaluate_completion, nc.evaluate_next_change, evaluate_commit_messages]
    keys = [
        set(cp.METRICS) | {f"unseen_{k}" for k in cp.METRICS},
        set(nc.METRICS),
        {"subject_rouge_l", "subject_bleu", "message_rouge_l", "message_bleu"},
    ]
    sizes = {
        name: pq.read_table(eval_dir / f"{name}.parquet", filters=[("split", "=", "test")]).num_rows
        for name in ("completion", "next_change", "commit_messages")
    }
    for task, metric_keys, name in zip(tasks, keys, sizes, strict=True):
        with_model = task(lm, eval_dir, run, split="test", limit=3)
        alone = task(None, eval_dir, run, split="test", limit=3)
        assert 0 < with_model["n"] <= 3 and with_model["n"] <= sizes[name], name
        assert set(with_model["metrics"]) == metric_keys, name
        assert "metrics" not in alone and alone["baselines"] == with_model["baselines"], name
        for scores in [with_model["metrics"], *with_model["baselines"].values()]:
            assert set(scores) == metric_keys
            assert all(v is None or 0 <= v <= 100 for v in scores.values()), scores
        sample = with_model["samples"][0]
        assert {"input", "model", "baselines", "reference"} <= set(sample), name
        assert "model" not in alone["samples"][0]
    result = cp.evaluate_completion(lm, eval_dir, run, split="val")
    assert result["fim"] and result["n"] > 0
    # a model that has the FIM tokens but trained on no FIM sample (its config says so)
    # continues the file instead
    lm.model.config.repolm = {"fim": False}
    lm.model.save_pretrained(built / "no-fim")
    AutoTokenizer.from_pretrained(built / "model").save_pretrained(built / "no-fim")
    unlearned = load_model(built / "no-fim")
    assert "<|fim_prefix|>" in unlearned.special and not unlearned.fim
    plain = cp.evaluate_completion(unlearned, eval_dir, run, split="val", limit=2)
    assert not plain["fim"] and plain["n"] == 2
    next_change = nc.evaluate_next_change(lm, eval_dir, run, split="val", candidates=3)
    assert next_change["candidates"] == 3 and 0 <= next_change["candidate_recall"] <= 1


def test_continuation_nll_equals_scoring_whole_sequences(built: Path) -> None:
    from repolm.lm import continuation_nll, generate, load_model, sequence_nll

    lm = load_model(built / "model")
    prompt = lm.encode("def op_1(a, b):\n    return a")
    continuations = [lm.encode(t) for t in (" + b\n", "\n", " * 2 - b + 7\n")]
    shared = continuation_nll(lm, prompt, continuations, max_tokens=64)
    whole = sequence_nll(lm, [prompt + c for c in continuations], first=[len(prompt)] * 3)
    for (a, n), (b, m) in zip(shared, whole, strict=True):
        assert n == m and a == pytest.approx(b, rel=1e-4)
    assert continuation_nll(lm, prompt, []) == []
    texts = generate(lm, [prompt, prompt[:2]], [1, 6])
    assert len(texts) == 2 and len(lm.encode(texts[0])) <= 2
