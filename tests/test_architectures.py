"""The from-scratch architecture files: typed, checked, and each builds a model."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from repolm.config.schema import ModelConfig
from repolm.errors import RepolmError
from repolm.train import models
from repolm.train.models import architecture, build_scratch, list_architectures

# parameters with the vocabulary each file's comment names (tied embeddings counted once)
PARAMETERS = {"tiny-cpu": (4096, 1.67e6), "small": (32768, 125e6), "blueprint-700m": (65536, 723e6)}


class Vocab(SimpleNamespace):
    """What llama_config reads of a tokenizer."""

    def __len__(self) -> int:
        return self.size


@pytest.mark.parametrize("name", list_architectures())
def test_every_architecture_builds_on_the_meta_device(name: str) -> None:
    import torch

    arch = architecture(ModelConfig(architecture=name))
    vocab, expected = PARAMETERS[name]
    tok = Vocab(size=vocab, bos_token_id=1, eos_token_id=2, pad_token_id=0)
    with torch.device("meta"):
        model = build_scratch(arch, tok)
    model.tie_weights()  # transformers 5.0 leaves a meta model's head untied until asked
    assert model.lm_head.weight is model.model.embed_tokens.weight
    n = sum(p.numel() for p in model.parameters())
    assert n == pytest.approx(expected, rel=0.01)
    assert model.config.num_hidden_layers == arch.layers
    assert model.config.max_position_embeddings == arch.context


def test_every_architecture_file_is_known() -> None:
    assert set(list_architectures()) == set(PARAMETERS)


def test_an_unknown_key_in_an_architecture_file_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "odd.yaml").write_text(
        "layers: 2\nhidden: 64\nheads: 2\nkv_heads: 2\nintermediate: 128\ncontext: 64\nlayer: 3\n"
    )
    monkeypatch.setattr(models, "ARCHITECTURES_DIR", tmp_path)
    with pytest.raises(RepolmError) as e:
        architecture(ModelConfig(architecture="odd"))
    assert "unknown key 'layer' in architecture file" in str(e.value)
    assert "\n" not in str(e.value) and "rope_theta" in e.value.hint


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"heads": 5}, "hidden size 192 is not a multiple of 5 heads"),
        ({"kv_heads": 4}, "6 heads cannot share 4 key/value heads evenly"),
    ],
)
def test_shapes_that_cannot_work_are_refused(override: dict, message: str) -> None:
    with pytest.raises(RepolmError, match=message):
        architecture(ModelConfig(architecture="tiny-cpu", **override))
