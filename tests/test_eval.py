"""The eval stage: bits per byte by hand, compressor baselines against the real tools, the
stage end to end on a tiny trained model, `repolm eval perplexity` and `compare`."""

from __future__ import annotations

import json
import lzma
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from conftest import TINY_MODEL, calc_history, calc_run, save_base_model
from repolm.config import load_config
from repolm.errors import RepolmError
from repolm.eval import compress
from repolm.eval.perplexity import score_documents, score_texts
from repolm.eval.stage import TASKS
from repolm.eval.texts import Document, sample, segments
from repolm.lm import load_model, sequence_nll
from repolm.pipeline.runner import run_pipeline

TEXT = "def add(a, b):\n    return a + b\n\n\nprint(add(1, 2))  # ünïcödé\n"


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_base_model(tmp_path_factory.mktemp("model") / "tiny")


ROUNDED_4 = 0.5e-4 + 1e-5  # a figure rounded to 4 places, plus fp32 noise


def test_bits_per_byte_matches_a_hand_computation(tiny_model: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32).eval()
    ids = [tok.bos_token_id, *tok(TEXT, add_special_tokens=False)["input_ids"]]
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0]
    nll = sum(-torch.log_softmax(logits[i], -1)[ids[i + 1]].item() for i in range(len(ids) - 1))
    by_hand = nll / math.log(2) / len(TEXT.encode("utf-8"))

    # fp32 like the hand computation (`auto` is bf16 on a CPU with AVX512-BF16); the result is
    # rounded to 4 places, so the tolerance is that rounding plus float noise
    result = score_texts(load_model(tiny_model, precision="fp32"), [TEXT])
    assert result["bytes"] == len(TEXT.encode("utf-8")) > len(TEXT)  # UTF-8 bytes, not chars
    assert result["tokens"] == len(ids) - 1
    assert result["bits_per_byte"] == pytest.approx(by_hand, abs=ROUNDED_4)
    assert result["perplexity"] == pytest.approx(math.exp(nll / (len(ids) - 1)), rel=1e-3)


def test_repolm_documents_are_scored_each_on_its_own(tiny_model: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    texts = ["<|commit|>add(1, 2)\n", "<|commit|>def op_3(a, b):\n", "<|commit|>x = 1\n"]
    docs = [Document(t, sha) for t, sha in zip(texts, ("a1", "b2", "a1"), strict=True)]
    tok = AutoTokenizer.from_pretrained(tiny_model)
    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32).eval()
    nll, scored = [], 0
    for d in texts:  # spelled as text for a model without repolm's tokens, each ended by EOS
        ids = tok(d, add_special_tokens=False, split_special_tokens=True)["input_ids"]
        ids.append(tok.eos_token_id)
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.tensor([ids])).logits[0], -1)
        nll.append(-sum(logp[i, ids[i + 1]].item() for i in range(len(ids) - 1)))
        scored += len(ids) - 1
    result = score_documents(load_model(tiny_model, precision="fp32"), docs)
    assert result["tokens"] == scored and result["bytes"] == sum(map(len, texts))
    assert result["bits_per_byte"] == pytest.approx(
        sum(nll) / math.log(2) / result["bytes"], abs=ROUNDED_4
    )
    # each commit's own figure: its documents' bits over its bytes
    a1 = (nll[0] + nll[2]) / math.log(2) / (len(texts[0]) + len(texts[2]))
    assert result["by_commit"] == {
        "a1": pytest.approx(a1, abs=ROUNDED_4),
        "b2": pytest.approx(nll[1] / math.log(2) / len(texts[1]), abs=ROUNDED_4),
    }


def test_a_record_knows_its_subject() -> None:
    text = "<|commit|><|author|>A<|date|>2024<|message|>Fix the parser\n\nLong body<|file|>a.py"
    assert Document(text, "s").subject == "Fix the parser"
    assert Document("<|commit|><|message|>one line<|file|>a.py\n", "s").subject == "one line"
    assert Document("<|commit|><|file|>a.py\n", "s").subject == ""


def test_long_sequences_are_scored_in_windows_each_token_once(tiny_model: Path) -> None:
    lm = load_model(tiny_model)
    seq = lm.encode(TEXT * 12)
    whole = sequence_nll(lm, [seq[:100]])[0]
    lm.max_len = 40  # windows of 40 tokens overlapping by 20
    (nll, n), (nll_short, n_short) = sequence_nll(lm, [seq, seq[:30]], first=[1, 5])
    assert n == len(seq) - 1 and n_short == 30 - 5
    assert whole[1] == 99 and nll > 0
    # a window's tokens keep at least half a window of context: close to the unwindowed score
    lm.max_len = 128
    assert sequence_nll(lm, [seq[:100]])[0][0] == pytest.approx(whole[0], rel=1e-5)


def test_a_budget_samples_whole_records_deterministically() -> None:
    docs = [Document(f"<|commit|>{'x' * (10 + 7 * (i % 5))}", f"{i:040x}") for i in range(60)]
    docs.append(Document("<|commit|>second record of the last commit", docs[-1].sha))
    total = sum(d.n_bytes for d in docs)
    assert sample(docs, None) == sample(docs, 0) == sample(docs, total) == docs
    for budget in (1, 40, 200, 500, 1200):
        kept = sample(docs, budget)
        assert kept == sample(list(docs), budget)  # the same for every caller
        assert kept == [d for d in docs if d in kept]  # whole records, in their order
        size = sum(d.n_bytes for d in kept)
        assert size <= budget or len(kept) == 1  # one record when none fits
        # the budget is filled: no record left out would still fit
        assert all(size + d.n_bytes > budget for d in docs if d not in kept)
    assert sample(docs, 200) != docs[: len(sample(docs, 200))]  # spread, not the oldest


def test_segments_give_back_special_tokens() -> None:
    from repolm.formats.documents import Tok

    assert segments("<|commit|><|date|>2021<|message|>fix <|file|>\n") == [
        Tok("<|commit|>"),
        Tok("<|date|>"),
        "2021",
        Tok("<|message|>"),
        "fix ",
        Tok("<|file|>"),
        "\n",
    ]
    assert segments("plain") == ["plain"]


@pytest.mark.skipif(not (shutil.which("xz") and shutil.which("zstd")), reason="needs xz, zstd")
def test_compressor_sizes_match_the_command_line_tools(tmp_path: Path) -> None:
    data = (Path(compress.__file__).read_bytes() + Path(__file__).read_bytes()) * 3
    f = tmp_path / "text"
    f.write_bytes(data)
    xz = subprocess.run(["xz", "-9e", "-T1", "-c", str(f)], capture_output=True, check=True)
    zstd = subprocess.run(["zstd", "-19", "-q", "-c", str(f)], capture_output=True, check=True)
    assert compress.xz_size(data) == len(xz.stdout)
    assert compress.zstd_size(data) == len(zstd.stdout)
    assert lzma.decompress(xz.stdout) == data


def test_conditioned_baseline_is_what_the_text_adds_to_the_training_text() -> None:
    train = b"".join(f"def f{i}(x):\n    return x * {i}\n".encode() for i in range(400))
    seen = train[-2000:]  # text the compressor has already seen: nearly free
    fresh = bytes(range(256)) * 8  # nothing to gain from the training text
    out = compress.baselines({"seen": seen, "fresh": fresh}, train)
    for c in ("xz -9e", "zstd -19"):
        s, f = out["seen"][c], out["fresh"][c]
        assert s["conditioned_bits_per_byte"] < 0.2 * s["bits_per_byte"]
        assert s["conditioned_bytes"] == compress.COMPRESSORS[c](
            train + seen
        ) - compress.COMPRESSORS[c](train)
        assert s["bits_per_byte"] == round(8 * compress.COMPRESSORS[c](seen) / len(seen), 4)
        assert f["conditioned_bits_per_byte"] > 0.5 * f["bits_per_byte"]
    assert "conditioned_bits_per_byte" not in compress.baselines({"x": seen}, b"")["x"]["xz -9e"]


# -- the stage end to end ---------------------------------------------------------------------

DATA = [
    "tokenize.vocab_size=400",
    "build.seq_len=64",
    "build.batch_size=4",
    "split.test_fraction=0.12",
    "split.val_fraction=0.08",
]
TINY = [
    *TINY_MODEL,
    "train.micro_batch=4",
    "train.max_steps=30",
    "train.eval_every=10",
    "train.eval_sequences=8",
    "train.hardware_every_s=0.2",
]
FAST = ["eval.tasks=[]", "eval.suites=[]"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(repository, run directory through train), shared by the module's tests."""
    return calc_run(tmp_path_factory, "eval", [*DATA, *TINY], until="train")


def fresh(trained: tuple[Path, Path], tmp_path: Path) -> Path:
    out = tmp_path / "run"
    shutil.copytree(trained[1], out)  # copy2 keeps mtimes: upstream stages stay cached
    return out


def test_the_stage_reports_bits_per_byte_next_to_the_compressors(trained, tmp_path) -> None:
    repo, _ = trained
    out = fresh(trained, tmp_path)
    outcomes = run_pipeline(out, repo, load_config(overrides=[*DATA, *TINY, *FAST]), only=["eval"])
    assert {o.stage: o.status for o in outcomes}["eval"] == "done"
    assert {o.status for o in outcomes if o.stage != "eval"} == {"cached"}
    report = json.loads((out / "eval" / "report.json").read_text())
    assert set(report["baselines"]) == {"test", "val"}
    for split in ("test", "val"):
        text = report["text"][split]
        assert text["documents"] > 0 and text["bytes"] > 0
        model = report["models"]["main"]["bits_per_byte"][split]
        assert model["bytes"] == text["bytes"] and 0 < model["bits_per_byte"] < 30
        for c in ("xz -9e", "zstd -19"):
            b = report["baselines"][split][c]
            assert 0 < b["conditioned_bits_per_byte"] < b["bits_per_byte"]
    assert report["text"]["train"]["conditioning_bytes"] == report["text"]["train"]["bytes"] > 0
    assert {"text", "compressors", "main: bits per byte"} <= set(report["timings"])
    assert report["timings"]["main: bits per byte"]["peak_rss_bytes"] > 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert (
        manifest["eval"]["models"]["main"]["bits_per_byte"]
        == report["models"]["main"]["bits_per_byte"]["test"]["bits_per_byte"]
    )
    # the held-out text: whole records, the header once, in the training format
    records = pq.read_table(out / "dataset" / "eval" / "future_records.parquet").to_pylist()
    test = [r["text"] for r in records if r["split"] == "test"]
    assert len(test) == report["text"]["test"]["documents"] == report["text"]["test"]["commits"]
    assert sum(len(t.encode()) for t in test) == report["text"]["test"]["bytes"]
    # each held-out commit: its xz size alone, and the model's figure on it
    shas = [r["sha"] for r in records if r["split"] == "test"]
    commits = report["commits"]["test"]
    assert [c["sha"] for c in commits] == shas and all(c["subject"] for c in commits)
    for c, text in zip(commits, test, strict=True):
        data = text.encode()
        assert c["bytes"] == len(data)
        assert c["xz -9e"] == round(8 * compress.xz_size(data) / len(data), 4)
    by_commit = report["models"]["main"]["bits_per_byte"]["test"]["by_commit"]
    assert set(by_commit) == set(shas) and all(0 < v < 30 for v in by_commit.values())
    for text in test:
        assert text.startswith("<|commit|>") and text.endswith("<|/commit|>")
        assert text.count("<|message|>") == 1 and "<|file|>" in text


def test_a_budget_and_a_window_bound_what_is_scored(trained, tmp_path) -> None:
    repo, _ = trained
    out = fresh(trained, tmp_path)
    sets = [*DATA, *TINY, *FAST, "eval.max_bytes=1400", "eval.window=32"]
    run_pipeline(out, repo, load_config(overrides=sets), only=["eval"])
    report = json.loads((out / "eval" / "report.json").read_text())
    assert report["window"] == report["models"]["main"]["window"] == 32
    records = pq.read_table(out / "dataset" / "eval" / "future_records.parquet").to_pylist()
    for split in ("test", "val"):
        text, full = report["text"][split], report["text"][split]["full"]
        rows = [r for r in records if r["split"] == split]
        assert full["bytes"] == sum(len(r["text"].encode()) for r in rows)
        assert full["documents"] == len(rows) >= text["documents"] > 0
        assert text["bytes"] <= 1400 or text["documents"] == 1  # one when none fits
        assert text["max_bytes"] == 1400
        kept = {c["sha"] for c in report["commits"][split]}
        data = "".join(r["text"] for r in rows if r["sha"] in kept).encode()
        assert (
            len(data) == text["bytes"] == report["models"]["main"]["bits_per_byte"][split]["bytes"]
        )
        xz = report["baselines"][split]["xz -9e"]  # the compressors on exactly the sampled bytes
        assert xz["compressed_bytes"] == compress.xz_size(data)
        assert set(report["models"]["main"]["bits_per_byte"][split]["by_commit"]) == kept
    assert report["text"]["test"]["full"]["bytes"] > 1400 >= report["text"]["test"]["bytes"]


def test_a_mistyped_suite_fails_before_any_model_is_scored(trained, tmp_path, monkeypatch) -> None:
    from repolm.eval import perplexity

    def never(*_: object) -> None:
        raise AssertionError("scored a model before checking the suites")

    monkeypatch.setattr(perplexity, "score_documents", never)
    repo, _ = trained
    out = fresh(trained, tmp_path)
    config = load_config(overrides=[*DATA, *TINY, "eval.tasks=[]", "eval.suites=[nosuch]"])
    with pytest.raises(RepolmError, match="suite not found: nosuch"):
        run_pipeline(out, repo, config, only=["eval"])


def test_a_fine_tuned_model_is_measured_next_to_its_base(tmp_path: Path) -> None:
    base = save_base_model(tmp_path / "base")
    repo = calc_history(tmp_path / "repo")
    sets = [
        *DATA,
        "tokenize.kind=base",
        f"tokenize.base_model={base}",
        f"models.main.base={base}",
        "models.main.method=lora",
        f"models.chat.base={base}",  # a second adapter on the same base
        "models.chat.method=lora",
        "train.micro_batch=4",
        "train.max_steps=4",
        "train.eval_every=2",
        "train.eval_sequences=8",
        "train.hardware_every_s=0.2",
        "eval.max_items=2",
    ]
    out = tmp_path / "run"
    run_pipeline(out, repo.path, load_config(overrides=sets), until="eval")
    full = json.loads((out / "eval" / "report.json").read_text())
    report = full["models"]["main"]
    assert report["base"]["model"] == str(base)
    for split in ("test", "val"):
        tuned, before = report["bits_per_byte"][split], report["base"]["bits_per_byte"][split]
        assert tuned["bytes"] == before["bytes"]  # the same text...
        assert tuned["tokens"] < before["tokens"]  # ...which the base spells out token by token
        assert tuned["bits_per_byte"] != before["bits_per_byte"]
    # every figure, with the model's own keys, on the same items next to the same baselines
    assert set(report["base"]) - {"model"} == set(report) - {"path", "base"}
    assert set(report["base"]["tasks"]) == set(report["tasks"]) == set(TASKS)
    for task, mine in report["tasks"].items():
        theirs = report["base"]["tasks"][task]
        assert set(theirs) == set(mine) and theirs["n"] == mine["n"] == 2, task
        assert theirs["baselines"] == mine["baselines"] and set(theirs["metrics"]) == set(
            mine["metrics"]
        )
    assert (
        report["base"]["suites"]["reasoning"]["counts"] == report["suites"]["reasoning"]["counts"]
    )
    assert {"main base: bits per byte", "main base: completion", "main: completion"} <= set(
        full["timings"]
    )
    # the base the two models share is measured once, and given to both
    assert full["models"]["chat"]["base"] == report["base"]
    assert "chat: completion" in full["timings"] and "chat base: completion" not in full["timings"]


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "repolm", *args], capture_output=True, text=True)


@pytest.mark.slow  # subprocess runs of the CLI: seconds each
def test_eval_cli_prints_the_table_and_compares_runs(trained, tmp_path) -> None:
    repo, _ = trained
    out = fresh(trained, tmp_path)
    sets = [a for s in [*DATA, *TINY, "eval.max_items=4"] for a in ("--set", s)]
    r = cli("eval", "--repo", str(repo), "--out", str(out), *sets)
    assert r.returncode == 0, r.stderr
    assert "bits per byte on the future" in r.stdout and "xz -9e" in r.stdout
    assert "model main: fewer bits than xz on" in r.stdout
    for needle in (
        "completion",
        "recall@5",
        "retrieval",
        "co_change",
        "template",
        "suite reasoning",
    ):
        assert needle in r.stdout, needle
    report = json.loads((out / "eval" / "report.json").read_text())["models"]["main"]
    assert set(report["tasks"]) == {"completion", "next_change", "commit_messages"}
    assert all(0 < t["n"] <= 4 and t["baselines"] for t in report["tasks"].values())
    assert report["suites"]["reasoning"]["counts"]["tests"] >= 20
    r = cli("eval", "compare", str(out), str(out / "eval" / "report.json"))
    assert r.returncode == 0, r.stderr
    assert "models.main.bits_per_byte.test.bits_per_byte" in r.stdout and "+0" in r.stdout
    assert "by_commit" not in r.stdout  # per-commit figures stay in the report


@pytest.mark.slow  # subprocess runs of the CLI: seconds each
def test_eval_perplexity_on_parquet_jsonl_and_text(tiny_model: Path, tmp_path: Path) -> None:
    texts = [TEXT, "x = 1\n" * 5]
    pq.write_table(pa.table({"id": [1, 2], "content": texts}), tmp_path / "a.parquet")
    (tmp_path / "b.jsonl").write_text("\n".join(json.dumps({"text": t}) for t in texts) + "\n")
    (tmp_path / "c.txt").write_text(TEXT)
    results = {}
    for name in ("a.parquet", "b.jsonl", "c.txt"):
        r = cli(
            "eval",
            "perplexity",
            "--model",
            str(tiny_model),
            "--data",
            str(tmp_path / name),
            "--json",
            str(tmp_path / f"{name}.json"),
        )
        assert r.returncode == 0, r.stderr
        results[name] = json.loads((tmp_path / f"{name}.json").read_text())
        assert json.loads(r.stdout) == results[name]
    assert results["a.parquet"]["bits_per_byte"] == results["b.jsonl"]["bits_per_byte"]
    assert results["a.parquet"]["documents"] == 2 and results["c.txt"]["documents"] == 1
    expected = score_texts(load_model(tiny_model), [TEXT])
    assert results["c.txt"]["bits_per_byte"] == expected["bits_per_byte"]


def test_eval_perplexity_bad_input_is_one_line(tiny_model: Path, tmp_path: Path) -> None:
    (tmp_path / "bad.jsonl").write_text('{"text": "a"}\nnot json\n')
    for data, needle in (
        (tmp_path / "missing.txt", "does not exist"),
        (tmp_path / "bad.jsonl", "bad.jsonl:2: not JSON"),
    ):
        r = cli("eval", "perplexity", "--model", str(tiny_model), "--data", str(data))
        assert r.returncode == 2 and needle in r.stderr
        assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = cli("eval", "perplexity", "--model", str(tmp_path), "--data", str(tmp_path / "bad.jsonl"))
    assert r.returncode == 2 and "Traceback" not in r.stderr


@pytest.mark.slow  # subprocess runs of the CLI: seconds each
def test_suite_code_and_qa_commands(tiny_model: Path, tmp_path: Path) -> None:
    suite = tmp_path / "suite.yaml"
    suite.write_text(
        "name: mini\ndescription: one test\nversion: 1\ntests:\n"
        "  - id: t1\n    category: architecture\n    prompt: What does add do?\n"
        "    rubric: {required: [sum], reference: It returns the sum of a and b.}\n"
    )
    r = cli(
        "eval", "suite", "--model", str(tiny_model), "--suite", str(suite), "--max-new-tokens", "8"
    )
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    assert result["counts"]["tests"] == 1 and 0 <= result["overall"] <= 100

    qa = tmp_path / "qa.jsonl"
    qa.write_text(
        json.dumps({"question": "Who adds?", "answer": "add", "context": TEXT, "chunk_ids": ["c1"]})
        + "\n"
    )
    r = cli("eval", "qa", "--model", str(tiny_model), "--data", str(qa))
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    assert result["n"] == 1 and result["citation_coverage"] is not None

    r = cli("eval", "code", "--model", str(tiny_model), "--limit", "2")
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    assert result["problems"] == 2 and result["pass@1"] == 0.0  # an untrained model
    assert sum(result["statuses"].values()) == 2
    r = cli("eval", "code", "--model", str(tiny_model), "--samples", "3")
    assert r.returncode == 2 and "temperature" in r.stderr


def test_eval_batch_size_reaches_every_generation(trained, tmp_path, monkeypatch) -> None:
    """`eval.batch_size` is the batch of the completion and commit-message tasks and the
    suites (next_change scores, it does not generate)."""
    from repolm.eval import behaviour, completion, messages

    repo, _ = trained
    out = fresh(trained, tmp_path)
    seen: list[int] = []
    for module in (behaviour, completion, messages):
        real = module.generate

        def recording(*args, real=real, **kw):  # type: ignore[no-untyped-def]
            seen.append(kw["batch_size"])
            return real(*args, **kw)

        monkeypatch.setattr(module, "generate", recording)
    sets = [*DATA, *TINY, "eval.max_items=3", "eval.batch_size=3", "eval.base_model=false"]
    run_pipeline(out, repo, load_config(overrides=sets), only=["eval"])
    assert len(seen) >= 3 and set(seen) == {3}
