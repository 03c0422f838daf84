"""The inference layer's surface: what `repolm.lm` offers, that it stays light to import, and
that it imports no stage (serving will sit on it)."""

from __future__ import annotations

import ast
import math
import subprocess
import sys
from pathlib import Path

import repolm.lm as lm

LM_DIR = Path(lm.__file__).parent
ALLOWED = ("repolm.lm", "repolm.formats", "repolm.hardware", "repolm.hub", "repolm.errors")


def test_public_surface() -> None:
    for name in lm.__all__:
        assert callable(getattr(lm, name)), name
    assert {"load_model", "wrap", "generate", "sequence_nll", "continuation_nll"} <= set(lm.__all__)


def test_bits_per_byte() -> None:
    assert lm.bits_per_byte(math.log(2) * 8, 4) == 2.0
    assert math.isnan(lm.bits_per_byte(1.0, 0))


def test_imports_only_the_layers_below() -> None:
    for path in LM_DIR.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("repolm"):
                assert node.module.startswith(ALLOWED), f"{path.name} imports {node.module}"
            if isinstance(node, ast.Import):
                for a in node.names:
                    assert not a.name.startswith("repolm") or a.name.startswith(ALLOWED)


def test_import_is_light() -> None:
    code = (
        "import sys, repolm.lm; print([m for m in ('torch', 'transformers') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_a_context_cap_and_the_cache_by_its_current_name(tmp_path: Path) -> None:
    from conftest import save_base_model
    from repolm.lm.scoring import cache_argument

    path = save_base_model(tmp_path / "tiny")
    whole, capped = lm.load_model(path), lm.load_model(path, max_len=16)
    assert capped.max_len == 16 < whole.max_len
    assert lm.load_model(path, max_len=10**6).max_len == whole.max_len  # never past its own
    assert cache_argument(whole.model) == "cache"  # transformers 5: past_key_values deprecated
    seq = whole.encode("def add(a, b):\n    return a + b\n" * 4)
    assert len(seq) > 16
    # windows of 16 tokens, every token scored once
    assert lm.sequence_nll(capped, [seq])[0][1] == lm.sequence_nll(whole, [seq])[0][1]


def test_a_row_stops_generating_once_its_rule_cuts(tmp_path: Path) -> None:
    from conftest import save_base_model

    model = lm.load_model(save_base_model(tmp_path / "tiny"))
    prompts = [model.encode("def op_3(a, b):\n"), model.encode("def op_4(a, b):\n")]
    whole = lm.generate(model, prompts, 12)
    seen: list[str] = []

    def first_token(text: str) -> int | None:
        seen.append(text)
        return 0  # cut everything, at once

    stopped = lm.generate(model, prompts, 12, stop=[first_token, None])
    assert stopped == ["", whole[1]]  # the other row of the batch goes on to its budget
    assert len(seen) == 2  # once during generation (then the row is done), once at the end
    budgets = lm.generate(model, prompts, [3, 12])
    assert budgets == [lm.generate(model, prompts, 3)[0], whole[1]]


def test_a_lora_adapter_alone_loads_merged_onto_its_grown_base(tmp_path: Path) -> None:
    """A run saved `train.save: adapter` whose tokenizer grew (repolm's tokens): its base is
    grown as training grew it and the adapter merged, so serving, completing and evaluating
    it work; a base that is not here is a one-line error."""
    import shutil

    import pytest
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from conftest import save_base_model
    from repolm.errors import RepolmError

    base = save_base_model(tmp_path / "base")
    tokenizer = AutoTokenizer.from_pretrained(base)
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|fim_prefix|>", "<|file|>"]})
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    model.resize_token_embeddings(len(tokenizer), pad_to_multiple_of=64)
    torch.manual_seed(0)
    lora = LoraConfig(
        r=4,
        target_modules=["q_proj", "v_proj"],
        modules_to_save=["embed_tokens", "lm_head"],
        init_lora_weights=False,
    )
    trained = get_peft_model(model, lora).eval()
    trained.save_pretrained(tmp_path / "adapter")
    tokenizer.save_pretrained(tmp_path / "adapter")
    loaded = lm.load_model(tmp_path / "adapter", precision="fp32")
    ids = torch.tensor([loaded.encode("def op_1(a, b):")])
    with torch.no_grad():
        diff = (loaded.model(ids).logits - trained(ids).logits).abs().max().item()
    assert diff < 1e-4 and loaded.special["<|file|>"] == len(tokenizer) - 1
    shutil.rmtree(base)
    with pytest.raises(RepolmError, match="needs its base"):
        lm.load_model(tmp_path / "adapter")
