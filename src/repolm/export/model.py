"""Export one trained model of a run: `merged` (a Hugging Face safetensors directory, the LoRA
adapter folded in) or `gguf` (one GGUF file plus an Ollama `Modelfile`).

The train stage already writes `OUT/models/<name>/` as a plain Hugging Face directory for full
fine-tunes and for LoRA runs saved `merged` or `both`; export copies that. Only a LoRA run saved
as its adapter alone is merged here, onto its base loaded the way training loads it.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from repolm.config.schema import ModelConfig
from repolm.errors import RepolmError
from repolm.export.modelfile import modelfile
from repolm.formats.special import MODEL_INFO
from repolm.fsutil import atomic_dir, write_text_atomic
from repolm.gguf.write import DTYPES, write_gguf
from repolm.layout import RunLayout
from repolm.logs import log
from repolm.train.models import load_base, stored_dtype

FORMATS = ("merged", "gguf")
MODELFILE = "Modelfile"
HF_FILES = ("*.json", "*.safetensors", "*.jinja", "*.txt", "*.model")  # not adapter/


@dataclass(frozen=True)
class Exported:
    model: str
    format: str
    path: Path  # the merged directory or the GGUF file
    modelfile: Path | None = None
    bytes: int = 0
    context: int = 2048  # the model's window

    def commands(self) -> list[str]:
        """How to serve the export with an engine built for throughput (docs/serving.md)."""
        where = shlex.quote(str(self.path))
        if self.format == "merged":
            return [
                f"vllm serve {where} --served-model-name {self.model} "
                f'--max-model-len {self.context} --api-key "$KEY"'
            ]
        commands = [f'llama-server -m {where} -c {self.context} --port 8000 --api-key "$KEY"']
        if self.modelfile is not None:
            modelfile = shlex.quote(str(self.modelfile))
            commands.append(f"ollama create {self.model} -f {modelfile}")
        return commands


def export_model(
    out: Path, model: str | None = None, fmt: str = "gguf", dtype: str = "f16"
) -> Exported:
    """Export `model` (default: the run's first) of the run in `out` as `fmt`."""
    if fmt not in FORMATS:
        raise RepolmError(f"unknown export format {fmt!r}", f"choose from {', '.join(FORMATS)}")
    if dtype not in DTYPES:
        raise RepolmError(f"unknown GGUF dtype {dtype!r}", f"choose from {', '.join(DTYPES)}")
    layout = RunLayout(out)
    models = layout.models()
    name, trained = layout.trained_model(model)
    dest = layout.model_export_dir(name)
    source = trained if _is_hf_model(trained) else _merge_adapter(layout, name, models[name])
    if fmt == "merged":
        if source == trained:
            with atomic_dir(dest / "merged") as tmp:
                _copy_model(trained, tmp)
        path = dest / "merged"
        result = Exported(name, fmt, path, bytes=_size(path), context=_context(source))
    else:
        path = dest / f"{name}-{dtype}.gguf"
        info = write_gguf(source, path, dtype, name=name)
        modelfile = _write_modelfile(source, path)
        result = Exported(name, fmt, path, modelfile, info["bytes"], _context(source))
    log.info(f"export {name}: {fmt} written to {result.path} ({result.bytes / 1e6:,.1f} MB)")
    return result


def _is_hf_model(path: Path) -> bool:
    return (path / "config.json").is_file() and any(path.glob("*.safetensors"))


def _copy_model(src: Path, dest: Path) -> None:
    """The model's files, hard-linked where the file system allows (training replaces
    `models/<name>/` whole, never a file in place), copied otherwise."""
    for pattern in HF_FILES:
        for f in src.glob(pattern):
            if f.is_file():
                try:
                    os.link(f, dest / f.name)
                except OSError:
                    shutil.copy2(f, dest / f.name)


def _size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def _merge_adapter(layout: RunLayout, name: str, spec: dict[str, Any]) -> Path:
    """A LoRA run saved as its adapter alone, merged onto its base into `merged/`."""
    from peft import PeftModel
    from transformers import AutoTokenizer

    adapter = layout.model_dir(name)
    if not (adapter / "adapter_config.json").is_file():
        raise RepolmError(f"{adapter} holds neither a model nor a LoRA adapter")
    config = ModelConfig.model_validate(spec)
    tokenizer = AutoTokenizer.from_pretrained(str(adapter))
    base = load_base(config, tokenizer, stored_dtype(config), "sdpa")
    merged = PeftModel.from_pretrained(base, str(adapter)).merge_and_unload()
    where = layout.model_export_dir(name) / "merged"
    with atomic_dir(where) as tmp:
        merged.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
    return where


def _context(source: Path) -> int:
    config = json.loads((source / "config.json").read_text(encoding="utf-8"))
    return int(config.get("max_position_embeddings") or 2048)


def _write_modelfile(source: Path, gguf_file: Path) -> Path:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(source))
    config = json.loads((source / "config.json").read_text(encoding="utf-8"))
    text = modelfile(
        gguf_file.name,
        _context(source),
        tok.get_vocab(),
        tok.eos_token,
        tok.chat_template if isinstance(tok.chat_template, str) else None,
        fim=(config.get(MODEL_INFO) or {}).get("fim", True),
    )
    path = gguf_file.parent / MODELFILE
    write_text_atomic(path, text)
    return path
