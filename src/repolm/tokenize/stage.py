"""The tokenize stage: OUT/filter/ (training split only) -> OUT/tokenizer/.

- `bpe`: byte-level BPE (GPT-2 style): every byte is in the alphabet, no normalizer, so any
  text round-trips exactly;
- `unigram`: a Unigram LM (SentencePiece's algorithm) over the same byte-level pre-tokens,
  exact for the same reason;
- `base`: a local Hugging Face tokenizer with repolm's special tokens added.

The corpus is the snapshot's files plus the patches and messages of training commits; nothing
from validation or test can shape the vocabulary. It is streamed by row group, and sampled
deterministically (by a hash of each document's key) down to `sample_bytes`, in one pass that
also keeps the round-trip sample. The saved tokenizer.json must round-trip that sample exactly
(checked with `tokenizers`: Rust, batched, every core), and the directory, reloaded with plain
`transformers`, must encode and decode part of it identically.
"""

from __future__ import annotations

import hashlib
import inspect
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from repolm.config.schema import TokenizeConfig
from repolm.errors import RepolmError
from repolm.formats.special import ENDOFTEXT, PAD, SPECIAL_TOKENS, UNK
from repolm.fsutil import atomic_dir
from repolm.hub import local_model_dir
from repolm.logs import log
from repolm.stage import StageContext, StageResult

if TYPE_CHECKING:
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerBase

# (table, text column) of OUT/filter/ read for training; tables with a `split` column are
# restricted to split == "train" (files.parquet is the snapshot at the cutoff: all training).
SOURCES = (("files.parquet", "text"), ("changes.parquet", "patch"), ("commits.parquet", "message"))
ROUNDTRIP_BYTES = 2_000_000  # about this much of the sample is checked
TRANSFORMERS_DOCUMENTS = 32  # of those, checked again through transformers (slower)


@dataclass(frozen=True)
class Document:
    key: str  # "<table>:<row>", stable for a given filter output
    text: str


def run_stage(ctx: StageContext) -> StageResult:
    stats = tokenize_run(ctx.layout.filter_dir, ctx.layout.tokenizer_dir, ctx.config.tokenize)
    summary = (
        f"{stats['kind']} tokenizer, {stats['vocab_size']} tokens; "
        f"{stats['corpus_bytes']:,} corpus bytes, round-trip exact"
    )
    return StageResult(stats=stats, summary=summary)


def tokenize_run(filter_dir: Path, out_dir: Path, cfg: TokenizeConfig) -> dict[str, Any]:
    t0 = time.monotonic()
    total = corpus_bytes(filter_dir)
    rate = min(1.0, cfg.sample_bytes / total) if total else 1.0
    basis = min(total, cfg.sample_bytes)  # about the sample's size, known before reading it
    sample = _Sample(filter_dir, rate, cfg.sample_bytes, min(1.0, ROUNDTRIP_BYTES / max(basis, 1)))
    with atomic_dir(out_dir) as tmp:
        if cfg.kind == "base":
            added = _save_base(cfg, tmp)
            sample.read()
        else:
            _save_trained(cfg, sample, tmp)
            added = len(SPECIAL_TOKENS) + (cfg.kind == "unigram")
        tok, check = check_saved(tmp, sample.checked, auto=cfg.kind == "base")
    stats = {
        "kind": cfg.kind,
        "vocab_size": len(tok),
        "corpus_bytes_total": total,
        "corpus_bytes": sample.used if cfg.kind != "base" else 0,  # bytes trained on
        "documents": sample.count,
        "sampled": rate < 1.0 or sample.used < total,
        "special_tokens": len(SPECIAL_TOKENS),
        "special_tokens_added": added,
        "roundtrip_documents": check["documents"],
        "roundtrip_bytes": check["bytes"],
        "roundtrip_exact": True,
        "seconds": round(time.monotonic() - t0, 3),
    }
    log.info(f"tokenize: {cfg.kind}, {len(tok)} tokens, round-trip exact on {check['bytes']:,} B")
    return stats


def training_documents(filter_dir: Path) -> Iterator[Document]:
    """Every training document of OUT/filter/, streamed one row group at a time."""
    for table, rows, texts in _training_columns(filter_dir):
        for n, text in zip(rows.to_pylist(), texts.to_pylist(), strict=True):
            if text:
                yield Document(f"{table}:{n}", text)


def corpus_bytes(filter_dir: Path) -> int:
    """UTF-8 bytes of the training corpus, summed by Arrow (no text is decoded)."""
    return sum(
        pc.sum(pc.binary_length(texts)).as_py() or 0
        for _, _, texts in _training_columns(filter_dir)
    )


def _training_columns(filter_dir: Path) -> Iterator[tuple[str, pa.Array, pa.Array]]:
    """(source table, row numbers, texts) of the training rows, one row group at a time:
    every snapshot file, and patches and messages of the train split only."""
    for table, column in SOURCES:
        path = filter_dir / table
        if not path.exists():
            raise RepolmError(f"missing {path}", "run the filter stage first")
        pf = pq.ParquetFile(path)
        has_split = "split" in pf.schema_arrow.names
        columns = [column, "split"] if has_split else [column]
        row = 0
        for i in range(pf.num_row_groups):
            batch = pf.read_row_group(i, columns=columns)
            rows = pa.array(range(row, row + batch.num_rows), pa.int64())
            row += batch.num_rows
            keep = pc.is_valid(batch.column(column))
            if has_split:
                keep = pc.and_(keep, pc.equal(batch.column("split"), "train"))
            yield table, rows.filter(keep), batch.column(column).filter(keep)


def _fraction(key: str) -> float:
    """A stable pseudo-random number in [0, 1) for a document key."""
    digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


class _Sample:
    """The deterministic sample: documents whose key hashes below `rate`, up to `limit` bytes.
    Read once (training consumes `texts()`); the same pass sets `used` and `count` and keeps in
    `checked` the documents for the round-trip check, those whose key hashes below `check_rate`
    (a second hash, so the check is spread over the sample)."""

    def __init__(self, filter_dir: Path, rate: float, limit: int, check_rate: float) -> None:
        self.filter_dir, self.rate, self.limit = filter_dir, rate, limit
        self.check_rate = check_rate
        self.used = 0
        self.count = 0
        self.checked: list[Document] = []

    def documents(self) -> Iterator[Document]:
        used = count = 0
        checked: list[Document] = []
        for doc in training_documents(self.filter_dir):
            if self.rate < 1.0 and _fraction(doc.key) >= self.rate:
                continue
            size = len(doc.text.encode())
            if used + size > self.limit:
                continue  # a smaller document later may still fit
            used += size
            count += 1
            if self.check_rate >= 1.0 or _fraction("roundtrip:" + doc.key) < self.check_rate:
                checked.append(doc)
            yield doc
        self.used, self.count, self.checked = used, count, checked

    def texts(self) -> Iterator[str]:
        return (d.text for d in self.documents())

    def read(self) -> None:
        """One pass without training (a base tokenizer): only the figures and `checked`."""
        for _ in self.documents():
            pass


# GPT-4's (cl100k) split, also Llama 3's: on this repository's future commits it gives 7% more
# bytes per token than GPT-2's at a 4,096-token vocabulary (docs/benchmarks.md).
GPT4_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)


def pre_tokenizer(name: str) -> Any:
    """The `tokenizers` pre-tokenizer of `tokenize.pre_tokenizer`, byte-level either way."""
    from tokenizers import Regex, pre_tokenizers

    if name == "gpt2":
        return pre_tokenizers.ByteLevel(add_prefix_space=False)
    return pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(GPT4_PATTERN), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )


def _save_trained(cfg: TokenizeConfig, sample: _Sample, out: Path) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    if cfg.kind == "bpe":
        tok = Tokenizer(models.BPE())
        trainer: Any = trainers.BpeTrainer(
            vocab_size=cfg.vocab_size,
            min_frequency=cfg.min_frequency,
            special_tokens=list(SPECIAL_TOKENS),
            initial_alphabet=alphabet,
            show_progress=False,
        )
        unk = None
    else:
        tok = Tokenizer(models.Unigram())
        trainer = trainers.UnigramTrainer(
            vocab_size=cfg.vocab_size,
            special_tokens=[*SPECIAL_TOKENS, UNK],
            initial_alphabet=alphabet,
            unk_token=UNK,
            show_progress=False,
        )
        unk = UNK
    # No normalizer: code is kept byte for byte (no NFKC, whitespace runs, tabs, CRLF).
    tok.pre_tokenizer = pre_tokenizer(cfg.pre_tokenizer)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(sample.texts(), trainer=trainer)
    if not sample.count:
        raise RepolmError("the training corpus is empty", "check the filter stage's outputs")
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=ENDOFTEXT,
        eos_token=ENDOFTEXT,
        pad_token=PAD,
        unk_token=unk,
        additional_special_tokens=list(SPECIAL_TOKENS[2:]),
        clean_up_tokenization_spaces=False,
    )
    wrapped.save_pretrained(str(out))


def _save_base(cfg: TokenizeConfig, out: Path) -> int:
    """The base model's tokenizer plus repolm's special tokens; returns how many were new."""
    from transformers import AutoTokenizer

    if not cfg.base_model:
        raise RepolmError("tokenize.kind=base needs tokenize.base_model", "set a local path")
    tok = AutoTokenizer.from_pretrained(
        local_model_dir(cfg.base_model), local_files_only=True, trust_remote_code=False
    )
    present = set(tok.all_special_tokens)
    extra = [t for t in SPECIAL_TOKENS if t not in present and t != PAD]
    # Extend the base model's own extra special tokens rather than replace them (the keyword
    # was renamed in transformers 5).
    params = inspect.signature(tok.add_special_tokens).parameters
    keep = next(
        p
        for p in ("replace_extra_special_tokens", "replace_additional_special_tokens")
        if p in params
    )
    added = tok.add_special_tokens({"additional_special_tokens": extra}, **{keep: False})
    if tok.pad_token is None:
        added += tok.add_special_tokens({"pad_token": PAD})
    tok.save_pretrained(str(out))
    return added


def check_saved(
    path: Path, docs: list[Document], auto: bool
) -> tuple[PreTrainedTokenizerBase, dict[str, int]]:
    """Read the saved directory back: its tokenizer.json must round-trip the documents exactly,
    and transformers must load it and agree with tokenizer.json on a spread of them."""
    from tokenizers import Tokenizer

    raw = Tokenizer.from_file(str(path / "tokenizer.json"))
    checked = roundtrip(raw, docs)
    tok = _load(path, auto)
    step = max(1, len(docs) // TRANSFORMERS_DOCUMENTS)  # spread over the tables
    same_in_transformers(tok, raw, docs[::step][:TRANSFORMERS_DOCUMENTS])
    return tok, checked


def _load(path: Path, auto: bool) -> PreTrainedTokenizerBase:
    """The saved directory as plain transformers loads it. A base model's class is whatever its
    files name, so AutoTokenizer resolves it; a trained tokenizer is the generic fast class,
    which AutoTokenizer also returns for it (tested), loaded directly because resolving it
    imports torch, about 2 s."""
    if auto:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(
            str(path), local_files_only=True, trust_remote_code=False
        )
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast.from_pretrained(str(path), local_files_only=True)


def roundtrip(tok: Tokenizer, docs: list[Document], batch: int = 256) -> dict[str, int]:
    """Encode and decode the documents (batched: the library spreads a batch over every core);
    raise if any comes back different: a tokenizer that changes code is unusable."""
    encode = getattr(tok, "encode_batch_fast", tok.encode_batch)  # no offsets: a fifth faster
    checked = {"documents": 0, "bytes": 0}
    for i in range(0, len(docs), batch):
        part = docs[i : i + batch]
        ids = [e.ids for e in encode([d.text for d in part], add_special_tokens=False)]
        back = tok.decode_batch(ids, skip_special_tokens=False)
        for doc, text in zip(part, back, strict=True):
            if text != doc.text:
                raise RuntimeError(
                    f"tokenizer does not round-trip {doc.key} ({len(doc.text)} characters in, "
                    f"{len(text)} out); a tokenizer that changes code is unusable"
                )
            checked["documents"] += 1
            checked["bytes"] += len(text.encode())
    return checked


def same_in_transformers(
    tok: PreTrainedTokenizerBase, raw: Tokenizer, docs: list[Document]
) -> None:
    """Raise unless `tok` (the directory loaded with transformers) encodes and decodes the
    documents as `raw` (its tokenizer.json) does: the round-trip check then holds for users."""
    if not docs:
        return
    texts = [d.text for d in docs]
    want = [e.ids for e in raw.encode_batch(texts, add_special_tokens=False)]
    ids = [list(x) for x in tok(texts, add_special_tokens=False)["input_ids"]]
    back = tok.batch_decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)
    for doc, got, expected, text in zip(docs, ids, want, back, strict=True):
        if got != expected or text != doc.text:
            raise RuntimeError(
                f"transformers does not encode and decode {doc.key} as tokenizer.json does; "
                "the saved directory would not behave as checked"
            )
