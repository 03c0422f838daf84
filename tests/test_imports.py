"""Every module imports (catches broken optional imports), and the CLI starts without heavy ones."""

from __future__ import annotations

import importlib
import pkgutil
import subprocess
import sys

import repolm


def test_every_module_imports() -> None:
    names = [m.name for m in pkgutil.walk_packages(repolm.__path__, "repolm.")]
    assert "repolm.mine.miner" in names
    for name in names:
        if name != "repolm.__main__":
            importlib.import_module(name)


def test_cli_start_up_is_light() -> None:
    code = (
        "import sys, repolm.cli; "
        "print(','.join(m for m in ('pyarrow', 'pydantic', 'torch', 'yaml', 'rich.table') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
