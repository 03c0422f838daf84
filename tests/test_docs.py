"""The reference docs name every config key and every output column, so they cannot drift."""

from __future__ import annotations

from pathlib import Path
from typing import get_args, get_origin

from pydantic import BaseModel

from repolm.config.schema import Config
from repolm.mine.tables import CHANGES_SCHEMA, COMMITS_SCHEMA

DOCS = Path(__file__).resolve().parents[1] / "docs"


def test_configuration_reference_covers_every_key() -> None:
    text = (DOCS / "configuration.md").read_text()
    for section, field in Config.model_fields.items():
        assert f"## `{section}`" in text
        model = field.annotation
        if get_origin(model) is dict:  # models: name -> ModelConfig
            model = get_args(model)[1]
        for key in _keys(model):
            assert f"| `{key}` |" in text, f"docs/configuration.md lacks {section}.{key}"


def section_of(model: object) -> str | None:
    """The top-level section this model class is the schema of."""
    for name, field in Config.model_fields.items():
        if field.annotation is model:
            return name
    return None


def _keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    """A section's keys, nested ones dotted (`mix.files`)."""
    out = []
    for key, field in model.model_fields.items():
        ann = field.annotation
        if key == "train" and section_of(ann) == "train":  # a model's own train section
            out.append(prefix + key)
        elif isinstance(ann, type) and issubclass(ann, BaseModel):
            out += _keys(ann, f"{prefix}{key}.")
        else:
            out.append(prefix + key)
    return out


def test_outputs_reference_covers_every_column() -> None:
    text = (DOCS / "outputs.md").read_text()
    from repolm.chunk.stage import SCHEMA as CHUNKS_SCHEMA
    from repolm.dataset.evalsets import SCHEMAS as EVAL_SCHEMAS
    from repolm.dataset.shards import INSTRUCTION_SCHEMA, SEQUENCE_SCHEMA

    schemas = (COMMITS_SCHEMA, CHANGES_SCHEMA, CHUNKS_SCHEMA, SEQUENCE_SCHEMA, INSTRUCTION_SCHEMA)
    for schema in (*schemas, *EVAL_SCHEMAS.values()):
        for name in schema.names:
            assert f"`{name}`" in text, f"docs/outputs.md lacks column {name}"
