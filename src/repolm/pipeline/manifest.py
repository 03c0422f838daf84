"""OUT/manifest.json: what ran, with which config and versions, what it produced. Rewritten
atomically after every stage, so it always describes complete outputs."""

from __future__ import annotations

import json
import platform
import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from repolm import __version__
from repolm.fsutil import write_json_atomic
from repolm.gitrepo import git_version
from repolm.layout import RunLayout

KEY_PACKAGES = (
    "pyarrow",
    "pydantic",
    "typer",
    "rich",
    "torch",
    "transformers",
    "tokenizers",
    "peft",
    "accelerate",
    "datasets",
)


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def load(out: Path) -> dict[str, Any]:
    path = RunLayout(out).manifest
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def environment() -> dict[str, Any]:
    deps = {}
    for name in KEY_PACKAGES:
        try:
            deps[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            deps[name] = None
    git = git_version()
    return {
        "repolm_version": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "git": ".".join(map(str, git)) if git else None,
        "dependencies": deps,
    }


def save(out: Path, data: dict[str, Any]) -> None:
    data["updated"] = now()
    write_json_atomic(RunLayout(out).manifest, data)
