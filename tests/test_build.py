"""The build stage: documents, FIM, packing, the training plan, and end to end on a fixture
repository: chronology (nothing from after the cutoff in training), packing that never joins
labels across documents, planted secrets in no output, evaluation sets from the future."""

from __future__ import annotations

import json
import random
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from repolm.config import load_config
from repolm.config.schema import BuildConfig
from repolm.dataset.assemble import describe_doc, implement_doc, record_pieces
from repolm.dataset.pack import IGNORE, Doc, Packer
from repolm.dataset.plan import training_plan
from repolm.errors import RepolmError
from repolm.formats import documents as dm
from repolm.formats import special as sp
from repolm.fsutil import file_digest
from repolm.pipeline.runner import run_pipeline

# -- pure pieces ------------------------------------------------------------------------------


def check_sequence(seq: dict, seq_len: int, eos: int, pad: int) -> None:
    """The packing invariants, for one sequence."""
    ids, labels, pos = (np.asarray(seq[k]) for k in ("input_ids", "labels", "position_ids"))
    assert len(ids) == len(labels) == len(pos) == seq_len
    start = 0
    for n in seq["doc_lengths"]:
        assert labels[start] == IGNORE, "a document's first token is predicted across a boundary"
        assert ids[start + n - 1] == eos, "documents end with EOS"
        assert list(pos[start : start + n]) == list(range(n)), "positions restart per document"
        own = labels[start : start + n]
        assert all(x in (IGNORE, y) for x, y in zip(own, ids[start : start + n], strict=True))
        start += n
    assert start <= seq_len
    assert (ids[start:] == pad).all() and (labels[start:] == IGNORE).all()


def test_packer_never_joins_labels_across_documents() -> None:
    rng = random.Random(1)
    docs = [
        Doc(
            np.asarray([rng.randrange(10, 99) for _ in range(rng.randint(1, 40))], dtype=np.int32),
            prompt=rng.choice([0, 0, 3]),
            meta=(n,),
        )
        for n in range(400)
    ]
    packer = Packer(64, eos_id=1, pad_id=0, window=8)
    seqs = [s for d in docs for s in packer.add(d)] + list(packer.flush())
    for s in seqs:
        check_sequence(s, 64, eos=1, pad=0)
    # every document exactly once, whole
    placed = sorted(m[0] for s in seqs for m in s["meta"])
    assert placed == list(range(400))
    by_meta = {m[0]: (s, i) for s in seqs for i, m in enumerate(s["meta"])}
    for d in docs:
        s, i = by_meta[d.meta[0]]
        start = sum(s["doc_lengths"][:i])
        got = np.asarray(s["input_ids"][start : start + len(d.ids)])
        assert (got == d.ids).all()
        labels = np.asarray(s["labels"][start : start + len(d.ids) + 1])
        assert (labels[: max(1, d.prompt)] == IGNORE).all()  # the prompt takes no loss
        assert (labels[max(1, d.prompt) :] != IGNORE).all()
    used = sum(sum(s["doc_lengths"]) for s in seqs)
    assert used / (64 * len(seqs)) > 0.9  # best fit wastes little


def test_packer_rejects_a_document_longer_than_a_sequence() -> None:
    with pytest.raises(ValueError, match="exceeds seq_len"):
        list(Packer(8, 1, 0).add(Doc(np.arange(8, dtype=np.int32))))


@pytest.mark.parametrize("seed", range(20))
def test_fim_keeps_every_character(seed: int) -> None:
    text = 'fn main() {\n    println!("héllo");\n}\n'
    segs, mode = dm.fim(text, random.Random(seed), spm_rate=0.5)
    toks = [s.token for s in segs if isinstance(s, dm.Tok)]
    strs = [s for s in segs if isinstance(s, str)]
    if mode == "psm":
        assert toks == [sp.FIM_PREFIX, sp.FIM_SUFFIX, sp.FIM_MIDDLE]
        prefix, suffix, middle = strs
    else:
        assert toks == [sp.FIM_PREFIX, sp.FIM_SUFFIX, sp.FIM_MIDDLE]
        assert segs[:2] == [dm.Tok(sp.FIM_PREFIX), dm.Tok(sp.FIM_SUFFIX)]
        suffix, prefix, middle = strs
    assert prefix + middle + suffix == text


def test_fim_modes_follow_the_rate() -> None:
    rng = random.Random(0)
    modes = [dm.fim("abcdef", rng, spm_rate=0.25)[1] for _ in range(2000)]
    assert 0.2 < modes.count("spm") / 2000 < 0.3


def test_record_pieces_fit_and_keep_every_section() -> None:
    header, end = np.asarray([7, 7, 7], np.int32), np.asarray([9], np.int32)
    sections = [
        (np.asarray([5, f], np.int32), [np.full(n, f, np.int32) for n in ns])
        for f, ns in ((20, [3, 4]), (21, [30, 25]), (22, [100]), (23, [2]))
    ]
    pieces = record_pieces(header, sections, end, budget=40)
    assert all(len(p) <= 40 for p in pieces)
    assert all((p[:3] == header).all() for p in pieces)
    assert pieces[-1][-1] == 9 and all(p[-1] != 9 for p in pieces[:-1])
    body = np.concatenate([p[3:] for p in pieces])
    for f, ns in ((20, [3, 4]), (21, [30, 25]), (22, [100]), (23, [2])):
        assert (body == f).sum() >= sum(ns)  # every hunk token is somewhere
    one = record_pieces(header, sections[:1], end, budget=40)
    assert len(one) == 1 and list(one[0]) == [7, 7, 7, 5, 20, 20, 20, 20, 20, 20, 20, 20, 9]


def test_instruction_docs_mask_the_prompt_and_respect_the_budget() -> None:
    prompt, msg = np.arange(5, dtype=np.int32), np.arange(3, dtype=np.int32)
    sections = [np.full(10, 1, np.int32), np.full(10, 2, np.int32)]
    doc = implement_doc(prompt, sections, budget=30, meta=())
    assert doc is not None and doc.prompt == 5 and len(doc.ids) == 25
    assert implement_doc(prompt, sections, budget=20, meta=()) is None  # never a cut answer
    d = describe_doc(prompt, sections, msg, budget=20, meta=())
    assert d is not None and d.prompt == 15 and list(d.ids[-3:]) == [0, 1, 2]  # one file fits
    assert describe_doc(prompt, sections, msg, budget=12, meta=()) is None


@pytest.mark.parametrize(
    ("train_tokens", "sequences", "epochs", "steps", "warmup"),
    [
        (1_000_000, 2000, 10, 630, 63),  # 20M / 1M = 20 -> at most 10; warm-up a tenth
        (5_000_000, 10_000, 4, 1252, 125),
        (30_000_000, 64_000, 3, 6000, 600),  # below min_epochs -> 3
        (900_000_000, 4_000_000, 3, 375_000, 1000),  # warm-up capped
        (1_000, 10, 10, 10, 1),  # a short run warms up for a tenth of its steps
    ],
)
def test_training_plan(train_tokens, sequences, epochs, steps, warmup) -> None:
    plan = training_plan(BuildConfig(batch_size=32), train_tokens, sequences)
    assert (plan["epochs"], plan["total_steps"], plan["warmup_steps"]) == (epochs, steps, warmup)


def test_recency_weight() -> None:
    assert dm.recency_weight(0, 365, 0.2) == 1.0
    assert dm.recency_weight(365, 365, 0.0) == pytest.approx(0.5)
    assert dm.recency_weight(365, 365, 0.2) == pytest.approx(0.6)
    assert dm.recency_weight(10_000, 365, 0.2) == pytest.approx(0.2, abs=1e-6)
    assert dm.recency_weight(10_000, 0, 0.2) == 1.0


@pytest.mark.parametrize(
    ("path", "language", "module"),
    [
        ("src/repolm/dataset/stage.py", "Python", "repolm.dataset.stage"),
        ("pkg/__init__.py", "Python", "pkg"),
        ("src/net/mod.rs", "Rust", "crate::net"),
        ("crates/core/src/lib.rs", "Rust", "crate"),
        ("src/main/java/org/x/App.java", "Java", "org.x"),
        ("cmd/tool/main.go", "Go", "cmd/tool"),
        ("README.md", "Markdown", ""),
    ],
)
def test_module_of(path: str, language: str, module: str) -> None:
    assert dm.module_of(path, language) == module


@pytest.mark.parametrize(
    ("text", "language", "doc"),
    [
        (
            "/// Parses a line.\n/// Returns tokens.\n#[inline]\nfn parse() {}\n",
            "Rust",
            "Parses a line.\nReturns tokens.",
        ),
        ("// Serve starts the server.\nfunc Serve() {}\n", "Go", "Serve starts the server."),
        ("/**\n * Adds two numbers.\n */\n@Override\nint add() {}\n", "Java", "Adds two numbers."),
        (
            '@cache\ndef load(path: str,\n         n: int) -> str:\n    """Load a file.\n\n    '
            'Cached."""\n    return ""\n',
            "Python",
            "Load a file.\n\nCached.",
        ),
        ("def f():\n    return 1\n", "Python", ""),
        ("fn plain() {}\n", "Rust", ""),
    ],
)
def test_doc_comment(text: str, language: str, doc: str) -> None:
    assert dm.doc_comment(text, language) == doc


def test_qa_pairs_from_documented_units_and_sections() -> None:
    qa = dm.qa_pairs(
        "function",
        "parse",
        "Parser::parse",
        "src/p.rs",
        "Rust",
        3,
        9,
        "/// Parses one line of input into tokens.\nfn parse() {}\n",
    )
    assert [q.question for q in qa] == [
        "What does the function `Parser::parse` in src/p.rs do?",
        "Where is `Parser::parse` defined?",
    ]
    assert qa[0].answer == "Parses one line of input into tokens."
    assert "lines 3-9" in qa[1].answer
    sec = dm.qa_pairs(
        "section",
        "Install",
        "Intro > Install",
        "README.md",
        "Markdown",
        1,
        4,
        "## Install\nRun make install to build everything.\n",
    )
    assert sec[0].answer == "Run make install to build everything."
    assert dm.qa_pairs("function", "f", "f", "a.rs", "Rust", 1, 1, "fn f() {}\n") == []


def test_hunks_drop_the_header() -> None:
    patch = (
        "diff --git a/x b/x\nindex 1..2 100644\n--- a/x\n+++ b/x\n@@ -1 +1 @@\n-a\n+b\n"
        "@@ -9 +9 @@\n-c\n+d\n"
    )
    assert dm.hunks(patch) == ["@@ -1 +1 @@\n-a\n+b\n", "@@ -9 +9 @@\n-c\n+d\n"]
    assert dm.hunks("diff --git a/x b/x\nBinary files differ\n") == []


# -- end to end -------------------------------------------------------------------------------


def secrets() -> dict[str, str]:
    """Fake credentials, assembled at run time so this file holds none of them."""
    return {
        "aws": "AKIA" + "Z7QK3MXW9P" + "L2RTNB",
        "github": "ghp_" + "Lm3nB7vQ2kX9pR5t" + "Wz8Yc4Hd6Jf1Gs0Ae7Ku",
        "password": "v3ry-" + "s3cret!pa55",
        "late_token": "ghp_" + "Pq8rS2tU6vW0xY4z" + "A1bC5dE9fG3hJ7kL2mN6",
    }


@pytest.fixture
def history(git_repo):
    s = secrets()
    r = git_repo("proj")
    r.write("README.md", "# Proj\n\n## Install\n\nRun make install to build everything here.\n")
    lib = "/// Adds two numbers together, wrapping on overflow.\n"
    r.write("src/lib.rs", lib + "pub fn add(a: u32, b: u32) -> u32 {\n    a.wrapping_add(b)\n}\n")
    r.write(
        "app/core.py",
        'def load(path):\n    """Read the configuration file at path."""\n'
        "    return open(path).read()\n",
    )
    r.commit("initial layout")
    r.write("config/prod.py", f'AWS_ACCESS_KEY_ID = "{s["aws"]}"\npassword = "{s["password"]}"\n')
    r.commit("add production config")
    r.remove("config/prod.py")
    r.commit("remove production config")
    for i in range(14):
        r.write(
            f"app/m{i}.py",
            f'def step_{i}(x):\n    """Step {i} of the pipeline, '
            f'documented."""\n    return x + {i}\n',
        )
        r.write(
            "src/lib.rs",
            r.path.joinpath("src/lib.rs").read_text()
            + f"\npub fn f{i}(x: u32) -> u32 {{\n    x * {i + 2}\n}}\n",
        )
        r.commit(f"step {i}: grow the library")
    # the future: only validation and test may see these lines
    for i in range(4):
        r.write(
            "app/core.py",
            f'TOKEN = "{s["late_token"]}"\n\n\ndef load(path):\n'
            f'    """Read the configuration file at path."""\n    return open(path).read()\n'
            f"\n\ndef future_{i}(x):\n    return x + FUTURE_MARKER_{i}\n",
        )
        r.write(
            "src/lib.rs",
            r.path.joinpath("src/lib.rs").read_text()
            + f"\npub fn later_{i}() -> u32 {{\n    FUTURE_MARKER_RS_{i}\n}}\n",
        )
        r.commit(f"future change {i}: FUTURE_MESSAGE_{i}")
    return r


def run_build(repo, out: Path, *extra: str) -> dict:
    overrides = [
        "tokenize.vocab_size=400",
        "build.seq_len=96",
        "build.batch_size=4",
        "build.shard_sequences=50",
        "split.test_fraction=0.12",
        "split.val_fraction=0.06",
        *extra,
    ]
    run_pipeline(out, repo.path, load_config(overrides=overrides), until="build")
    return json.loads((out / "dataset" / "stats.json").read_text())


def rows(out: Path, part: str) -> list[dict]:
    return [
        r
        for p in sorted((out / "dataset" / part).glob("*.parquet"))
        for r in pq.read_table(p).to_pylist()
    ]


def test_build_end_to_end(history, tmp_path: Path) -> None:
    out = tmp_path / "run"
    stats = run_build(history, out)
    cutoff = datetime.fromisoformat(stats["cutoff"]["cutoff_time"])
    tok = json.loads((out / "tokenizer" / "tokenizer.json").read_text())
    vocab = {t["content"]: t["id"] for t in tok["added_tokens"]}
    eos, pad = vocab[sp.ENDOFTEXT], vocab[sp.PAD]
    train, val, test = (rows(out, p) for p in ("train", "val", "test"))
    assert train and val and test
    assert stats["sequences"] == {"train": len(train), "val": len(val), "test": len(test)}

    # chronology: training is the past, validation and test the future
    assert all(t <= cutoff for r in train for t in r["time"])
    assert all(t > cutoff for r in val + test for t in r["time"])
    train_text = "".join(r["text"] for r in train)
    train_text += json.dumps(
        pq.read_table(out / "dataset/instructions/train.parquet").to_pylist(), default=str
    )
    assert "FUTURE_MARKER" not in train_text and "FUTURE_MESSAGE" not in train_text
    future_text = "".join(r["text"] for r in val + test)
    assert "FUTURE_MARKER_" in future_text and "FUTURE_MESSAGE_3" in future_text
    assert "wrapping_add" in train_text and "step_12" in train_text

    # packing
    for r in train + val + test:
        check_sequence(r, 96, eos, pad)
        assert len(r["kind"]) == len(r["sha"]) == len(r["doc_lengths"])
    kinds = {k for r in train for k in r["kind"]}
    assert kinds >= {"file", "commit", "qa"}
    assert any(sp.FIM_MIDDLE in r["text"] for r in train)
    assert stats["counts"]["fim_psm"] and stats["counts"]["fim_spm"]
    assert any("<|change:new_function|>" in r["text"] for r in train)
    assert any("Adds two numbers together" in r["text"] and "Question:" in r["text"] for r in train)

    # the plan follows the formula
    plan = stats["plan"]
    tokens = stats["tokens"]["train"]["total"]
    assert plan["train_tokens"] == tokens
    assert plan["epochs"] == min(max(20_000_000 // tokens, 3), 10)
    assert plan["total_steps"] == -(-len(train) // 4) * plan["epochs"]
    for part, shards in stats["shards"].items():
        for name, digest in shards.items():
            assert file_digest(out / "dataset" / part / name) == digest

    sft = pq.read_table(out / "dataset/instructions/train.parquet").column("kind").to_pylist()
    assert stats["instructions"]["train/qa"] == sft.count("qa") > 0

    # evaluation sets: only the future
    ev = out / "dataset" / "eval"
    for name in ("future_patches", "completion", "next_change", "commit_messages"):
        table = pq.read_table(ev / f"{name}.parquet").to_pylist()
        assert table, name
        assert all(r["time"] > cutoff and r["split"] in ("val", "test") for r in table), name
    completion = pq.read_table(ev / "completion.parquet").to_pylist()
    fut = [r for r in completion if r["name"] == "future_3"]
    assert fut and "def load(path):" in fut[0]["prefix"]
    assert fut[0]["target"].startswith("def future_3(x):")
    nc = pq.read_table(ev / "next_change.parquet").to_pylist()[-1]
    assert nc["files"] == ["app/core.py", "src/lib.rs"]
    assert "FUTURE_MESSAGE_3" in nc["message"] and len(nc["previous_shas"]) == 5
    cm = pq.read_table(ev / "commit_messages.parquet").to_pylist()
    assert any("FUTURE_MARKER_2" in r["diff"] and "FUTURE_MESSAGE_2" in r["message"] for r in cm)

    # no planted secret in any output of the stage (raw bytes and decoded tables)
    texts = []
    for p in (out / "dataset").rglob("*"):
        if p.is_file():
            texts.append(p.read_bytes().decode("latin-1"))
            if p.suffix == ".parquet":
                texts.append(json.dumps(pq.read_table(p).to_pylist(), default=str))
    texts += [p.read_text() for p in (out / "logs").glob("*.log")]
    texts.append((out / "manifest.json").read_text())
    for name, value in secrets().items():
        assert not any(value in t or value[:16] in t for t in texts), f"{name} leaked"
    assert "<SECRET:" in fut[0]["prefix"]


def test_dataset_loads_with_hugging_face_datasets(history, tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    out = tmp_path / "run"
    run_build(history, out)
    d = out / "dataset"
    ds = datasets.load_dataset(
        "parquet",
        data_files={
            p: sorted(str(f) for f in (d / p).glob("*.parquet")) for p in ("train", "val", "test")
        },
        cache_dir=str(tmp_path / "cache"),
    )
    assert ds["train"].num_rows > 0
    assert len(ds["train"][0]["input_ids"]) == 96
    sft = datasets.load_dataset(
        "parquet",
        data_files=str(d / "instructions/train.parquet"),
        cache_dir=str(tmp_path / "cache"),
    )["train"]
    assert set(sft.column_names) >= {"prompt", "completion"}


def mix(name: str, **shares: float) -> list[str]:
    """--set overrides for a named mix; kinds not given get 0."""
    return [
        f"build.mixes.{name}.{k}={shares.get(k, 0)}"
        for k in ("files", "commits", "instructions", "qa")
    ]


def test_build_is_deterministic_and_follows_the_mix(history, tmp_path: Path) -> None:
    a = run_build(history, tmp_path / "a")
    # the same build with named mixes: the default dataset is byte for byte the same
    b = run_build(
        history,
        tmp_path / "b",
        *mix("reasoning", instructions=0.7, qa=0.3),
        *mix("same", files=0.4, commits=0.35, instructions=0.15, qa=0.1),
    )
    assert a["shards"] == b["shards"]
    assert a["mixes"] == {} and not (tmp_path / "a/dataset/mixes").exists()
    unchanged = lambda s: {k: v for k, v in s.items() if k not in ("mixes", "seconds")}  # noqa: E731
    assert unchanged(a) == unchanged(b)  # counts included: a named mix counts on its own

    # a named mix: its own training split, loadable, of its kinds only, from the past
    cutoff = datetime.fromisoformat(b["cutoff"]["cutoff_time"])
    reasoning = b["mixes"]["reasoning"]
    train = rows(tmp_path / "b", "mixes/reasoning/train")
    assert reasoning["sequences"] == len(train) > 0
    assert sorted(p.name for p in (tmp_path / "b/dataset/mixes").iterdir()) == ["reasoning", "same"]
    assert [p.name for p in (tmp_path / "b/dataset/mixes/reasoning").iterdir()] == ["train"]
    kinds = {k for r in train for k in r["kind"]}
    assert "qa" in kinds and kinds <= {"implement", "describe", "qa"}
    assert all(t <= cutoff for r in train for t in r["time"])
    assert reasoning["tokens"]["total"] == sum(sum(r["doc_lengths"]) for r in train)
    assert reasoning["mix"]["realised"]["files"] == reasoning["mix"]["realised"]["commits"] == 0
    assert reasoning["plan"]["train_sequences"] == len(train)
    assert reasoning["plan"]["train_tokens"] == reasoning["tokens"]["total"]
    assert reasoning["counts"] == {}  # no files: no FIM
    for name, digest in reasoning["shards"].items():
        assert file_digest(tmp_path / "b/dataset/mixes/reasoning/train" / name) == digest
    # the default's shares draw the default's copies: the same training shards
    assert b["mixes"]["same"]["shards"] == b["shards"]["train"]
    assert b["mixes"]["same"]["counts"]["fim_psm"] == b["counts"]["fim_psm"]
    only_commits = run_build(
        history, tmp_path / "c", "build.mix.files=0", "build.mix.qa=0", "build.mix.instructions=0"
    )
    assert set(only_commits["tokens"]["train"]) == {"total", "commit"}


def test_a_future_with_nothing_kept_is_a_clear_error_when_required(git_repo, tmp_path) -> None:
    # without split.require_future the build trains on every commit (test_no_future.py)
    r = git_repo("vend")
    for i in range(12):
        r.write(f"src/m{i}.py", f"def f{i}():\n    return {i}\n")
        r.commit(f"c{i}")
    for i in range(3):
        r.write(f"vendor/v{i}.py", f"x = {i}\n")
        r.commit(f"vendored {i}")
    with pytest.raises(RepolmError, match="validation split of the dataset is empty") as e:
        run_build(r, tmp_path / "run", "split.require_future=true")
    assert "split.cutoff" in e.value.hint


def test_recency_makes_recent_commits_more_frequent(history, tmp_path: Path) -> None:
    # commits are a minute apart; a 90-second half-life leaves the oldest with almost no weight
    stats = run_build(
        history, tmp_path / "run", "build.recency_half_life_days=0.001", "build.recency_floor=0.0"
    )
    seen: dict[str, int] = {}
    for r in rows(tmp_path / "run", "train"):
        for kind, sha in zip(r["kind"], r["sha"], strict=True):
            if kind == "commit":
                seen[sha] = seen.get(sha, 0) + 1
    line = history.git("rev-list", "--reverse", "HEAD").split()
    cutoff = datetime.fromisoformat(stats["cutoff"]["cutoff_time"])
    when = {
        s: datetime.fromtimestamp(int(history.git("log", "-1", "--format=%ct", s)), timezone.utc)
        for s in line
    }
    train = [s for s in line if when[s] <= cutoff]
    assert seen.get(train[0], 0) == 0 and seen.get(train[-1], 0) >= 1
    assert seen.get(train[-1], 0) == max(seen.values())
    assert stats["recency"]["weight_min"] < 0.01


def test_long_files_are_cut_at_line_ends_without_losing_a_token() -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    from repolm.dataset.encode import _line_pieces

    text = "".join(f"fn f{i}(x: u32) -> u32 {{ x * {i} }} // é\n" for i in range(200))
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(
        [text],
        trainers.BpeTrainer(
            vocab_size=300,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        ),
    )
    enc = tok.encode(text, add_special_tokens=False)
    pieces = list(_line_pieces(text, enc, budget=50))
    assert len(pieces) > 5
    assert "".join(text[a:b] for a, b, _ in pieces) == text
    assert np.concatenate([ids for _, _, ids in pieces]).tolist() == enc.ids
    assert all(len(ids) <= 50 for _, _, ids in pieces)
    assert all(text[b - 1] == "\n" for _, b, _ in pieces)  # every cut at a line end
    assert all(tok.decode(ids.tolist()) == text[a:b] for a, b, ids in pieces)


def test_build_with_a_base_models_tokenizer(history, tmp_path: Path) -> None:
    """A base tokenizer keeps its own EOS (`</s>` here); repolm's tokens are appended, a pad
    token added since it has none; the sequences use those ids."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    raw = Tokenizer(models.BPE())
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320,
        special_tokens=["</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    raw.train_from_iterator(["def f(x):\n    return x\n", "pub fn add() {}\n"] * 20, trainer)
    base = tmp_path / "base"
    PreTrainedTokenizerFast(tokenizer_object=raw, eos_token="</s>").save_pretrained(base)
    out = tmp_path / "run"
    run_build(history, out, "tokenize.kind=base", f"tokenize.base_model={base}")
    tok = AutoTokenizer.from_pretrained(out / "tokenizer")
    eos, pad = tok.convert_tokens_to_ids("</s>"), tok.convert_tokens_to_ids(sp.PAD)
    assert tok.eos_token == "</s>" and tok.pad_token == sp.PAD
    train = rows(out, "train")
    assert train
    for r in train:
        check_sequence(r, 96, eos, pad)
    # the structural tokens are single ids in the sequences
    ids = {i for r in train for i in r["input_ids"]}
    assert tok.convert_tokens_to_ids(sp.COMMIT) in ids and tok.convert_tokens_to_ids(sp.FILE) in ids


def test_diffs_too_large_become_line_counts(history, tmp_path: Path) -> None:
    out = tmp_path / "run"
    stats = run_build(history, out, "build.max_diff_bytes=150")
    assert stats["counts"]["diffs_too_large"] > 0
    text = "".join(r["text"] for part in ("train", "val", "test") for r in rows(out, part))
    assert "lines; the diff is too large to show)" in text
    # the evaluation sets keep every patch whole
    patches = pq.read_table(out / "dataset/eval/future_patches.parquet").column("patch")
    assert max(len(p.as_py()) for p in patches) > 150


def test_a_named_mix_without_data_is_a_clear_error(git_repo, tmp_path: Path) -> None:
    r = git_repo("nodocs")  # no documentation or doc comments: no Q&A
    for i in range(16):
        r.write(f"src/m{i}.py", f"def f{i}():\n    return {i}\n")
        r.commit(f"c{i}")
    with pytest.raises(
        RepolmError,
        match="build.mixes.ask gives weight only to kinds with no "
        r"documents in this repository \(qa\)",
    ) as e:
        run_build(r, tmp_path / "run", *mix("ask", qa=1))
    assert "build.mixes.ask.files" in e.value.hint
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("name", ["default", "Code", "_code", "co de", "código", ""])
def test_a_bad_mix_name_is_a_config_error(name: str, tmp_path: Path) -> None:
    from repolm.errors import ConfigError

    path = tmp_path / "config.yaml"
    path.write_text(json.dumps({"build": {"mixes": {name: {"qa": 1}}}}))  # JSON is YAML
    with pytest.raises(ConfigError, match=r"'build\.mixes' in .*config\.yaml: .*mix name"):
        load_config(config_file=path)
    mixes = BuildConfig(mixes={"code": {"files": 1}, "r2-x_y": {"qa": 0.5}}).mixes
    assert set(mixes) == {"code", "r2-x_y"}
    # a named mix is made of what it names: the kinds it leaves out get 0, not the defaults
    assert (mixes["code"].files, mixes["code"].commits, mixes["code"].qa) == (1.0, 0.0, 0.0)


def test_a_mix_without_weight_is_a_config_error() -> None:
    from repolm.errors import ConfigError

    zero = [f"build.mix.{k}=0" for k in ("files", "commits", "instructions", "qa")]
    with pytest.raises(ConfigError, match="build.mix"):
        load_config(overrides=zero)
