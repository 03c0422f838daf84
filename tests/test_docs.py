"""The reference docs name every config key and every output column, so they cannot drift."""

from __future__ import annotations

from pathlib import Path

from repolm.config.schema import Config
from repolm.mine.tables import CHANGES_SCHEMA, COMMITS_SCHEMA

DOCS = Path(__file__).resolve().parents[1] / "docs"


def test_configuration_reference_covers_every_key() -> None:
    text = (DOCS / "configuration.md").read_text()
    for section, field in Config.model_fields.items():
        assert f"## `{section}`" in text
        for key in field.annotation.model_fields:
            assert f"| `{key}` |" in text, f"docs/configuration.md lacks {section}.{key}"


def test_outputs_reference_covers_every_column() -> None:
    text = (DOCS / "outputs.md").read_text()
    from repolm.chunk.stage import SCHEMA as CHUNKS_SCHEMA

    for schema in (COMMITS_SCHEMA, CHANGES_SCHEMA, CHUNKS_SCHEMA):
        for name in schema.names:
            assert f"`{name}`" in text, f"docs/outputs.md lacks column {name}"
