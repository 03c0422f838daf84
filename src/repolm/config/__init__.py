"""Configuration: typed models and the layered loader (defaults < preset < file < flags)."""

from repolm.config.load import (
    DEFAULT_PRESET,
    ResolvedConfig,
    list_presets,
    load_config,
    preset_path,
)
from repolm.config.schema import Config, MineConfig

__all__ = [
    "DEFAULT_PRESET",
    "Config",
    "MineConfig",
    "ResolvedConfig",
    "list_presets",
    "load_config",
    "preset_path",
]
