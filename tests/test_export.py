"""`repolm export`: a run's trained model as a merged Hugging Face directory or a GGUF with an
Ollama Modelfile, for a full model and for a LoRA run saved as its adapter alone."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from conftest import calc_run, save_base_model
from repolm.cli import app
from repolm.config import load_config
from repolm.errors import RepolmError
from repolm.export.model import export_model
from repolm.export.modelfile import modelfile
from repolm.formats.special import FIM_MIDDLE, FIM_PREFIX, FIM_SUFFIX
from repolm.fsutil import write_text_atomic
from repolm.layout import RunLayout

PROMPT = "def op_7(a, b):\n    return"


def make_run(out: Path, overrides: list[str]) -> RunLayout:
    layout = RunLayout(out)
    write_text_atomic(layout.run_config, load_config(overrides=overrides).to_yaml())
    return layout


def logits(path: Path | Any, tokenizer_path: Path | None = None, **kw: Any) -> Any:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = path
    if isinstance(path, Path):
        model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32, **kw)
    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_path or path))
    with torch.no_grad():
        return model.eval()(tokenizer(PROMPT, return_tensors="pt").input_ids).logits


def test_full_model_exports_as_gguf_and_merged(tmp_path: Path) -> None:
    layout = make_run(tmp_path / "run", [])
    trained = save_base_model(layout.model_dir("main"))
    done = export_model(layout.out, fmt="gguf", dtype="f32")
    assert done.path == layout.model_export_dir("main") / "main-f32.gguf"
    diff = (logits(done.path.parent, trained, gguf_file=done.path.name) - logits(trained)).abs()
    assert diff.max().item() < 1e-4
    text = done.modelfile.read_text()
    assert text.startswith("FROM ./main-f32.gguf\n")
    assert "PARAMETER num_ctx 128" in text and 'PARAMETER stop "</s>"' in text
    merged = export_model(layout.out, fmt="merged")
    assert merged.path == layout.model_export_dir("main") / "merged"
    assert (logits(merged.path) - logits(trained)).abs().max().item() == 0
    assert not list(layout.model_export_dir("main").glob(".*"))  # no temporary left behind


def test_lora_adapter_alone_is_merged_onto_its_base(tmp_path: Path) -> None:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = save_base_model(tmp_path / "base")
    layout = make_run(
        tmp_path / "run",
        [f"models.main.base={base}", "models.main.method=lora", "models.main.train.save=adapter"],
    )
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32)
    lora = LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    peft_model = get_peft_model(model, lora)
    peft_model.save_pretrained(layout.model_dir("main"))
    AutoTokenizer.from_pretrained(str(base)).save_pretrained(layout.model_dir("main"))
    want = logits(peft_model, base)
    assert (want - logits(base)).abs().max().item() > 1e-3  # the adapter changes the model
    done = export_model(layout.out, "main", fmt="gguf", dtype="f32")
    merged = layout.model_export_dir("main") / "merged"
    assert (logits(merged) - want).abs().max().item() < 1e-4
    got = logits(done.path.parent, base, gguf_file=done.path.name)
    assert (got - want).abs().max().item() < 1e-4


def test_export_errors(tmp_path: Path) -> None:
    with pytest.raises(RepolmError, match="no config.yaml"):
        export_model(tmp_path / "none")
    layout = make_run(tmp_path / "run", [])
    with pytest.raises(RepolmError, match="not trained yet"):
        export_model(layout.out)
    with pytest.raises(RepolmError, match="has no model 'other'"):
        export_model(layout.out, "other")
    with pytest.raises(RepolmError, match="unknown GGUF dtype"):
        export_model(layout.out, dtype="q4")


def test_modelfile_template() -> None:
    fim_vocab = {FIM_PREFIX, FIM_SUFFIX, FIM_MIDDLE, "<|endoftext|>"}
    text = modelfile("m.gguf", 2048, fim_vocab, "<|endoftext|>", None)
    assert "{{- if .Suffix }}<|fim_prefix|>{{ .Prompt }}<|fim_suffix|>{{ .Suffix }}" in text
    unlearned = modelfile("m.gguf", 2048, fim_vocab, "<|endoftext|>", None, fim=False)
    assert "{{ .Suffix }}" not in unlearned and 'TEMPLATE """{{ .Prompt }}"""' in unlearned
    assert 'PARAMETER stop "<|endoftext|>"' in text and "PARAMETER num_ctx 2048" in text
    chat = modelfile("m.gguf", 8192, {"<|im_start|>", "<|im_end|>"}, "<|im_end|>", "<|im_start|>")
    assert "{{ .Suffix }}" not in chat and "<|im_start|>{{ .Role }}" in chat
    assert chat.count("PARAMETER stop") == 1
    plain = modelfile("m.gguf", 128, {"a"}, None, None)
    assert 'TEMPLATE """{{ .Prompt }}"""' in plain and "stop" not in plain


def test_cli_export(tmp_path: Path) -> None:
    layout = make_run(tmp_path / "run", [])
    save_base_model(layout.model_dir("main"))
    args = ["export", "--out", str(layout.out), "--format", "gguf", "--dtype", "q8_0"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert (layout.model_export_dir("main") / "main-q8_0.gguf").is_file()
    assert "Modelfile" in result.output


def save_repolm_model(path: Path) -> Path:
    """A tiny Llama with a tokenizer trained the way the tokenize stage trains one: byte-level
    BPE, the GPT-4 split, repolm's special tokens (FIM ones included)."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    from repolm.formats.special import ENDOFTEXT, PAD, SPECIAL_TOKENS
    from repolm.tokenize.stage import pre_tokenizer

    tok = Tokenizer(models.BPE())
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.pre_tokenizer = pre_tokenizer("gpt4")
    tok.decoder = decoders.ByteLevel()
    texts = [f"def op_{i}(a, b):\n    return a * {i} + b\n" for i in range(60)]
    tok.train_from_iterator(texts, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=ENDOFTEXT,
        eos_token=ENDOFTEXT,
        pad_token=PAD,
        additional_special_tokens=list(SPECIAL_TOKENS[2:]),
        clean_up_tokenization_spaces=False,
    )
    fast.save_pretrained(path)
    torch.manual_seed(2)
    config = LlamaConfig(
        vocab_size=len(fast) + 7,  # rows the tokenizer does not use, as a resized model has
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        tie_word_embeddings=True,
    )
    LlamaForCausalLM(config).save_pretrained(path)
    return path


def test_repolm_tokenizer_and_fim_model(tmp_path: Path) -> None:
    """repolm's own tokenizer (GPT-4 split, special tokens) survives the GGUF whole, a tied
    grouped-query model keeps its logits, and the Modelfile fills in the middle."""
    import gguf
    from transformers import AutoTokenizer

    layout = make_run(tmp_path / "run", [])
    trained = save_repolm_model(layout.model_dir("main"))
    done = export_model(layout.out, fmt="gguf", dtype="f32")
    reader = gguf.GGUFReader(done.path)
    assert reader.get_field("tokenizer.ggml.pre").contents() == "llama-bpe"
    assert "output.weight" not in {t.name for t in reader.tensors}  # tied head
    text = "<|commit|>def op_12(a, b):\n    return a*12 + b  # 1234\n<|fim_middle|>x<|endoftext|>"
    ours = AutoTokenizer.from_pretrained(str(trained))
    back = AutoTokenizer.from_pretrained(str(done.path.parent), gguf_file=done.path.name)
    assert (
        back(text, add_special_tokens=False).input_ids
        == ours(text, add_special_tokens=False).input_ids
    )
    got = logits(done.path.parent, trained, gguf_file=done.path.name)
    assert (got - logits(trained)).abs().max().item() < 1e-4
    modelfile_text = done.modelfile.read_text()
    assert "<|fim_suffix|>{{ .Suffix }}<|fim_middle|>" in modelfile_text
    assert 'PARAMETER stop "<|endoftext|>"' in modelfile_text


@pytest.mark.slow
def test_a_lora_run_on_a_gguf_base_exports_back_to_gguf(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    """The whole way round: a GGUF base, LoRA through the pipeline (tokenize extends the base's
    tokenizer, train merges), then GGUF again, read back by transformers."""
    from repolm.gguf.write import write_gguf

    base = write_gguf(save_base_model(tmp_path / "hf"), tmp_path / "base.gguf", "f32")["file"]
    overrides = [
        "tokenize.kind=base",
        f"tokenize.base_model={base}",
        f"models.main.base={base}",
        "models.main.method=lora",
        "models.main.lora.rank=4",
        "train.max_steps=2",
        "train.micro_batch=4",
        "train.eval_every=2",
        "train.eval_sequences=8",
    ]
    _, out = calc_run(tmp_path_factory, "gguf-lora", overrides, until="train")
    trained = RunLayout(out).model_dir("main")
    done = export_model(out, fmt="gguf", dtype="f32")
    got = logits(done.path.parent, trained, gguf_file=done.path.name)
    assert (got - logits(trained)).abs().max().item() < 1e-4


def test_the_serving_commands_fit_what_they_serve(tmp_path: Path) -> None:
    """Test-by-config of vLLM, llama.cpp and Ollama on the export (none runs here): each
    command names files that exist, in the shape its engine reads (a safetensors directory
    of a supported architecture and no remote code; a GGUF whose context is the `-c` given),
    with the window the model has."""
    import json
    import shlex

    from gguf import GGUFReader

    layout = make_run(tmp_path / "run", [])
    save_base_model(layout.model_dir("main"))
    merged = export_model(layout.out, fmt="merged")
    (vllm,) = [shlex.split(c) for c in merged.commands()]
    assert vllm[:2] == ["vllm", "serve"] and vllm[vllm.index("--served-model-name") + 1] == "main"
    directory = Path(vllm[2])
    config = json.loads((directory / "config.json").read_text())
    assert config["architectures"][0] in ("LlamaForCausalLM", "Qwen2ForCausalLM")
    assert "auto_map" not in config and list(directory.glob("*.safetensors"))
    assert not list(directory.glob("*.bin")) and (directory / "tokenizer.json").is_file()
    assert int(vllm[vllm.index("--max-model-len") + 1]) == config["max_position_embeddings"]

    gguf = export_model(layout.out, fmt="gguf", dtype="f32")
    server, ollama = (shlex.split(c) for c in gguf.commands())
    file = Path(server[server.index("-m") + 1])
    fields = GGUFReader(file).fields
    context = fields["llama.context_length"]
    assert int(server[server.index("-c") + 1]) == int(context.parts[context.data[0]][0])
    assert ollama[:3] == ["ollama", "create", "main"]
    modelfile = Path(ollama[ollama.index("-f") + 1])
    assert modelfile.read_text().startswith(f"FROM ./{file.name}\n")
    assert (modelfile.parent / file.name).is_file()
