"""Configuration: typed models and the layered loader (defaults < preset < file < flags)."""

from repolm.config.load import (
    DEFAULT_PRESET,
    ResolvedConfig,
    list_presets,
    load_config,
    preset_path,
)
from repolm.config.schema import (
    ChunkConfig,
    Config,
    FilterConfig,
    MineConfig,
    SplitConfig,
    TokenizeConfig,
)

__all__ = [
    "DEFAULT_PRESET",
    "ChunkConfig",
    "Config",
    "FilterConfig",
    "MineConfig",
    "SplitConfig",
    "TokenizeConfig",
    "ResolvedConfig",
    "list_presets",
    "load_config",
    "preset_path",
]
