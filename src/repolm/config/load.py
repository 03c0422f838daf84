"""Resolve a run's configuration from its layers, once, at the edge.

Layers, lowest first: built-in defaults < preset (YAML shipped in the package) < `--config` file
< `--set section.key=value` flags. Each layer is validated on its own first, so an error names
the file (or flag) the bad key came from.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from repolm.config.schema import Config, deep_merge
from repolm.errors import ConfigError
from repolm.fsutil import json_digest

PRESETS_DIR = Path(__file__).parent / "presets"
DEFAULT_PRESET = "tiny-cpu"


@dataclass(frozen=True)
class ResolvedConfig:
    config: Config
    preset: str
    sources: list[str] = field(default_factory=list)

    @property
    def digest(self) -> str:
        return json_digest(self.config.model_dump(mode="json"))

    def to_yaml(self) -> str:
        header = f"# resolved by repolm from: {', '.join(self.sources)}\n"
        return header + yaml.safe_dump(self.config.model_dump(mode="json"), sort_keys=False)


def list_presets() -> list[str]:
    return sorted(p.stem for p in PRESETS_DIR.glob("*.yaml"))


def preset_path(name: str) -> Path:
    path = PRESETS_DIR / f"{name}.yaml"
    if not path.is_file():
        known = ", ".join(list_presets())
        raise ConfigError(f"unknown preset '{name}'", f"choose one of: {known}")
    return path


def load_config(
    preset: str | None = None,
    config_file: Path | None = None,
    overrides: list[str] | None = None,
) -> ResolvedConfig:
    preset = preset or DEFAULT_PRESET
    layers: list[tuple[str, dict[str, Any]]] = []
    ppath = preset_path(preset)
    layers.append((f"preset {preset} ({ppath})", _read_yaml(ppath)))
    if config_file is not None:
        layers.append((str(config_file), _read_yaml(Path(config_file))))
    if overrides:
        layers.append(("--set", _parse_overrides(overrides)))

    merged: dict[str, Any] = {}
    for source, data in layers:
        _validate(data, source)
        merged = deep_merge(merged, data)
    config = _validate(merged, "the merged configuration")
    return ResolvedConfig(config=config, preset=preset, sources=[s for s, _ in layers])


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise ConfigError(f"config file not found: {path}", "check the --config path")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read config file {path}: {e}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"invalid YAML in {path}{where}", "fix the syntax") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping of sections, got {type(data).__name__}")
    return data


def _parse_overrides(items: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"bad --set '{item}'", "write --set section.key=value")
        value = yaml.safe_load(raw) if raw.strip() else ""
        node = out
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"bad --set '{item}': '{part}' is set twice")
        node[parts[-1]] = value
    return out


def _validate(data: dict[str, Any], source: str) -> Config:
    try:
        return Config.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        loc = ".".join(str(p) for p in err["loc"])
        more = f" (and {e.error_count() - 1} more)" if e.error_count() > 1 else ""
        if err["type"] == "extra_forbidden":
            hint = _suggest(err["loc"])
            raise ConfigError(f"unknown config key '{loc}' in {source}{more}", hint) from None
        raise ConfigError(f"invalid value for '{loc}' in {source}: {err['msg']}{more}") from None


def _suggest(loc: tuple[Any, ...]) -> str:
    """Suggest the closest valid key for a misspelled one."""
    model: type[BaseModel] = Config
    for part in loc[:-1]:
        fld = model.model_fields.get(str(part))
        ann = getattr(fld, "annotation", None) if fld else None
        if not (isinstance(ann, type) and issubclass(ann, BaseModel)):
            break
        model = ann
    keys = list(model.model_fields)
    close = difflib.get_close_matches(str(loc[-1]), keys, n=1)
    if close:
        return f"did you mean '{close[0]}'?"
    return f"valid keys here: {', '.join(keys)}"
