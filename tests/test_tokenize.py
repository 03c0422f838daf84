"""The tokenize stage end to end: a tokenizer trained on the training split only, loadable with
plain transformers, whose special tokens are single ids and which round-trips code exactly."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from repolm.config import load_config
from repolm.formats.special import SPECIAL_TOKENS
from repolm.pipeline.runner import run_pipeline
from repolm.tokenize.stage import training_documents

ODD = (
    "def odd():\n"
    "\tif True:\t\t# tabs\n"
    "\t\treturn 'héllo wörld ✓ 中文 🚀'   \n"  # trailing spaces, unicode
    "x = 1\r\n"  # CRLF
    "y = 2" + " " * 37 + "# a long run of spaces\n"
    "\n\n\n    \n"
)
MARKER = "zyxquuxheldoutmarker"


@pytest.fixture
def repo_and_out(git_repo, tmp_path: Path) -> tuple[Path, Path]:
    """~12 commits of small Python and Rust files, run through the tokenize stage (bpe); the
    marker appears only in the last commits, which fall in test."""
    repo = git_repo()
    repo.write("odd.py", ODD)
    repo.commit("add odd whitespace file")
    for i in range(9):
        repo.write(
            f"pkg/mod{i}.py",
            f"def func_{i}(a, b):\n    '''Add {i}.'''\n    return a + b * {i}\n\n\n"
            f"class Thing{i}:\n    def method(self):\n        return func_{i}(1, 2)\n",
        )
        repo.write(
            f"src/lib{i}.rs",
            f"pub fn compute_{i}(x: u32) -> u32 {{\n    x * {i} + 1\n}}\n\n"
            f"#[cfg(test)]\nmod tests {{\n    #[test]\n"
            f"    fn t() {{ assert_eq!(super::compute_{i}(1), {i + 1}); }}\n}}\n",
        )
        repo.commit(f"add module {i}")
    repo.write("pkg/late.py", f"def {MARKER}():\n    return '{MARKER}'\n")
    repo.commit(f"add {MARKER}")
    repo.write("pkg/late.py", f"def {MARKER}():\n    return '{MARKER}!'\n")
    repo.commit(f"tweak {MARKER}")
    out = tmp_path / "out"
    cfg = load_config(overrides=["tokenize.vocab_size=400", "split.test_fraction=0.2"])
    run_pipeline(out, repo.path, cfg, until="tokenize")
    return repo.path, out


@pytest.fixture
def tok(repo_and_out):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(repo_and_out[1] / "tokenizer")


def roundtrips(tok, text: str) -> bool:
    ids = tok.encode(text, add_special_tokens=False)
    return tok.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False) == text


def test_special_tokens_are_single_ids(tok) -> None:
    from transformers import PreTrainedTokenizerFast

    assert type(tok) is PreTrainedTokenizerFast  # AutoTokenizer picks the class the stage checks
    ids = set()
    for t in SPECIAL_TOKENS:
        enc = tok.encode(t, add_special_tokens=False)
        assert len(enc) == 1, t
        ids.add(enc[0])
    assert len(ids) == len(SPECIAL_TOKENS)
    assert tok.eos_token == tok.bos_token == "<|endoftext|>"
    assert tok.pad_token == "<|pad|>"
    assert len(tok) > len(SPECIAL_TOKENS) + 256  # merges were learned


def test_roundtrip_exact_on_training_files(tok, repo_and_out) -> None:
    out = repo_and_out[1]
    files = pq.read_table(out / "filter" / "files.parquet").to_pylist()
    assert files
    odd = [f["text"] for f in files if f["path"] == "odd.py"]
    assert odd == [ODD]
    for f in files:
        assert roundtrips(tok, f["text"]), f["path"]
    for text in (ODD, "\x00\x7f\t \r\n", "<|file|>a.py\n<|hunk|>+x\n", " " * 200, "🦀" * 3):
        assert roundtrips(tok, text)


def test_the_default_split_keeps_a_leading_symbol_with_its_word(tok) -> None:
    """gpt4 pre-tokenizer: `_per` is one piece, GPT-2's split would cut `_` off; digits come in
    threes; a newline and the indentation after it are separate pieces."""
    from repolm.tokenize.stage import pre_tokenizer

    def pieces(name: str, text: str) -> list[str]:
        return [p for p, _ in pre_tokenizer(name).pre_tokenize_str(text)]

    text = "bits_per_byte = 12345\n    return"
    assert pieces("gpt4", text) == [
        "bits",
        "_per",
        "_byte",
        "Ġ=",
        "Ġ",
        "123",
        "45",
        "Ċ",
        "ĠĠĠ",
        "Ġreturn",
    ]
    assert pieces("gpt2", text)[:5] == ["bits", "_", "per", "_", "byte"]
    backend = tok.backend_tokenizer.pre_tokenizer.pre_tokenize_str(text)
    assert [p for p, _ in backend] == pieces("gpt4", text)  # the saved tokenizer uses it


def test_stage_stats(repo_and_out) -> None:
    manifest = json.loads((repo_and_out[1] / "manifest.json").read_text())
    stats = manifest["stages"]["tokenize"]["stats"]
    assert stats["kind"] == "bpe"
    assert stats["roundtrip_exact"] is True
    assert stats["roundtrip_bytes"] == stats["corpus_bytes"] > 0  # a tiny corpus: all checked
    assert stats["sampled"] is False
    assert stats["special_tokens"] == len(SPECIAL_TOKENS)


def test_corpus_is_training_split_only(repo_and_out) -> None:
    filt = repo_and_out[1] / "filter"
    docs = list(training_documents(filt))
    assert not any(MARKER in d.text for d in docs)
    for table, column in (("changes.parquet", "patch"), ("commits.parquet", "message")):
        rows = pq.read_table(filt / table, columns=[column, "split"]).to_pylist()
        assert {r["split"] for r in rows} >= {"train", "test"}
        want = {f"{table}:{i}" for i, r in enumerate(rows) if r["split"] == "train" and r[column]}
        assert {d.key for d in docs if d.key.startswith(table)} == want


def test_sample_is_deterministic_and_capped(repo_and_out, tmp_path: Path) -> None:
    from repolm.config.schema import TokenizeConfig
    from repolm.tokenize.stage import tokenize_run

    filt = repo_and_out[1] / "filter"
    cfg = TokenizeConfig(vocab_size=300, sample_bytes=3000)
    a = tokenize_run(filt, tmp_path / "a", cfg)
    b = tokenize_run(filt, tmp_path / "b", cfg)
    assert a["sampled"] and 0 < a["corpus_bytes"] <= 3000
    assert a["corpus_bytes"] == b["corpus_bytes"]
    assert (tmp_path / "a" / "tokenizer.json").read_text() == (
        tmp_path / "b" / "tokenizer.json"
    ).read_text()


def test_unigram(repo_and_out, tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    from repolm.config.schema import TokenizeConfig
    from repolm.tokenize.stage import tokenize_run

    stats = tokenize_run(
        repo_and_out[1] / "filter", tmp_path / "u", TokenizeConfig(kind="unigram", vocab_size=400)
    )
    assert stats["roundtrip_exact"]
    tok = AutoTokenizer.from_pretrained(tmp_path / "u")
    for t in SPECIAL_TOKENS:
        assert len(tok.encode(t, add_special_tokens=False)) == 1
    for text in (ODD, "\x00\x7f ☃ 中文\t\t  x"):
        assert roundtrips(tok, text)


def save_base_tokenizer(path: Path, special: list[str]):
    """A small byte-level BPE saved as a Hugging Face directory, standing in for a base model's."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    raw = Tokenizer(models.BPE())
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<|endoftext|>", *special],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    raw.train_from_iterator(["def f(x):\n    return x\n", "fn main() {}\n"] * 20, trainer)
    base = PreTrainedTokenizerFast(
        tokenizer_object=raw,
        eos_token="<|endoftext|>",
        additional_special_tokens=special,
        clean_up_tokenization_spaces=False,
    )
    base.save_pretrained(path)
    return base


def test_base_tokenizer(repo_and_out, tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    base_dir = tmp_path / "base"
    vocab = save_base_tokenizer(base_dir, ["<|fim_prefix|>"]).get_vocab()

    out = repo_and_out[1]
    cfg = load_config(overrides=["tokenize.kind=base", f"tokenize.base_model={base_dir}"])
    run_pipeline(out, repo_and_out[0], cfg, until="tokenize")
    tok = AutoTokenizer.from_pretrained(out / "tokenizer")
    new_vocab = tok.get_vocab()
    assert all(new_vocab[t] == i for t, i in vocab.items())  # original ids kept
    for t in SPECIAL_TOKENS:
        assert len(tok.encode(t, add_special_tokens=False)) == 1, t
    assert len(tok) == len(vocab) + len(SPECIAL_TOKENS) - 2  # endoftext, fim_prefix not repeated
    assert tok.eos_token == "<|endoftext|>"
    assert roundtrips(tok, ODD)
    stats = json.loads((out / "manifest.json").read_text())["stages"]["tokenize"]["stats"]
    assert stats["kind"] == "base" and stats["roundtrip_exact"]


def test_replacing_the_base_tokenizer_reruns_the_stage(repo_and_out, tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    repo, out = repo_and_out
    base_dir = tmp_path / "base"
    save_base_tokenizer(base_dir, [])
    cfg = load_config(overrides=["tokenize.kind=base", f"tokenize.base_model={base_dir}"])
    assert run_pipeline(out, repo, cfg, until="tokenize")[-1].status == "done"
    (base_dir / "model.safetensors").write_bytes(b"weights are not the tokenizer's")
    assert run_pipeline(out, repo, cfg, until="tokenize")[-1].status == "cached"
    save_base_tokenizer(base_dir, ["<|base_only|>"])  # same path, new files
    assert run_pipeline(out, repo, cfg, until="tokenize")[-1].status == "done"
    assert "<|base_only|>" in AutoTokenizer.from_pretrained(out / "tokenizer").get_vocab()


def test_base_model_must_be_local(repo_and_out, tmp_path: Path) -> None:
    from repolm.config.schema import TokenizeConfig
    from repolm.errors import RepolmError
    from repolm.tokenize.stage import tokenize_run

    cfg = TokenizeConfig(kind="base", base_model="gpt2")
    with pytest.raises(RepolmError, match="neither a local directory nor a model in the local"):
        tokenize_run(repo_and_out[1] / "filter", tmp_path / "x", cfg)
    assert not (tmp_path / "x").exists()


def test_a_tokenizer_that_changes_code_fails(repo_and_out, tmp_path: Path) -> None:
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from repolm.config.schema import TokenizeConfig
    from repolm.tokenize.stage import tokenize_run

    raw = Tokenizer(models.BPE())
    raw.normalizer = normalizers.Lowercase()  # changes `Thing0` to `thing0`
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    raw.train_from_iterator(["class Thing:\n    pass\n"] * 5, trainer)
    PreTrainedTokenizerFast(tokenizer_object=raw).save_pretrained(tmp_path / "lower")
    cfg = TokenizeConfig(kind="base", base_model=str(tmp_path / "lower"))
    with pytest.raises(RuntimeError, match="does not round-trip"):
        tokenize_run(repo_and_out[1] / "filter", tmp_path / "x", cfg)
    assert not (tmp_path / "x").exists()


def test_transformers_must_match_tokenizer_json(tok, tmp_path: Path) -> None:
    from tokenizers import Tokenizer

    from repolm.tokenize.stage import Document, same_in_transformers

    docs = [Document("files.parquet:0", ODD)]
    same_in_transformers(tok, tok.backend_tokenizer, docs)
    save_base_tokenizer(tmp_path / "other", [])
    other = Tokenizer.from_file(str(tmp_path / "other" / "tokenizer.json"))
    with pytest.raises(RuntimeError, match="transformers does not encode and decode"):
        same_in_transformers(tok, other, docs)
