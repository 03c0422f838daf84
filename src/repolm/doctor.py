"""`repolm doctor`: is this machine ready, and if not, what exactly to do."""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from repolm.gitrepo import MIN_GIT, git_version
from repolm.hardware.device import cpu_has_bf16
from repolm.hub import BUILTIN_BASES, builtin_file, builtin_version

REQUIRED = ("typer", "rich", "pydantic", "pyyaml", "pyarrow")


@dataclass
class Check:
    name: str
    status: str  # ok | warn | fail
    detail: str
    fix: str = ""


def run_checks(out: Path) -> list[Check]:
    checks = [_python(), _git(), *_packages(), *_torch(), *_bases(), _disk(out), _memory()]
    return checks


def _python() -> Check:
    v = sys.version_info
    ok = v >= (3, 10)
    return Check(
        "python",
        "ok" if ok else "fail",
        sys.version.split()[0],
        "" if ok else "install Python 3.10 or newer",
    )


def _git() -> Check:
    v = git_version()
    if v is None:
        return Check("git", "fail", "not found", "install git 2.31 or newer (apt install git)")
    text = ".".join(map(str, v))
    if v[:2] < MIN_GIT:
        return Check("git", "fail", text, "install git 2.31 or newer")
    return Check("git", "ok", text)


def _packages() -> list[Check]:
    out = []
    for name in REQUIRED:
        try:
            out.append(Check(name, "ok", metadata.version(name)))
        except metadata.PackageNotFoundError:
            out.append(Check(name, "fail", "missing", "pip install -e . (or make install)"))
    return out


def _torch() -> list[Check]:
    try:
        import torch
    except ImportError:
        return [
            Check(
                "torch",
                "warn",
                "not installed (needed from the train stage on)",
                "pip install torch==2.13.0 for CPU, or your CUDA build of torch",
            )
        ]
    checks = [Check("torch", "ok", torch.__version__)]
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            free, total = torch.cuda.mem_get_info(i)
            bf16 = "bf16" if torch.cuda.is_bf16_supported() else "no bf16"
            checks.append(
                Check(
                    f"cuda:{i}",
                    "ok",
                    f"{p.name}, {total / 2**30:.1f} GiB ({free / 2**30:.1f} free), {bf16}",
                )
            )
    else:
        cpu_bf16 = cpu_has_bf16()
        checks.append(
            Check(
                "cuda",
                "warn",
                "no CUDA device: training runs on the CPU "
                f"({os.cpu_count()} cores, {'native' if cpu_bf16 else 'no native'} bf16)",
                "fine for the tiny-cpu preset; for larger models use a CUDA GPU",
            )
        )
    return checks


def _bases() -> list[Check]:
    """The built-in offline bases: installed (with version and size) or how to install them."""
    checks = []
    for name, base in BUILTIN_BASES.items():
        found = builtin_file(base)
        if found is None:
            checks.append(
                Check(f"base {name}", "warn", f"{base.package} not installed", base.install)
            )
            continue
        size = found.stat().st_size / 1e6
        detail = f"{base.package} {builtin_version(base)}, {found.name} ({size:,.0f} MB)"
        checks.append(Check(f"base {name}", "ok", detail))
    return checks


def _disk(out: Path) -> Check:
    probe = out.resolve()
    while not probe.exists():
        probe = probe.parent
    free = shutil.disk_usage(probe).free / 2**30
    if free < 2:
        return Check(
            "disk", "fail", f"{free:.1f} GiB free at {probe}", "free some space or pass --out"
        )
    if free < 20:
        return Check(
            "disk",
            "warn",
            f"{free:.1f} GiB free at {probe}",
            "enough to mine; model checkpoints may need more",
        )
    return Check("disk", "ok", f"{free:.0f} GiB free at {probe}")


def _memory() -> Check:
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError, AttributeError):
        return Check("memory", "warn", "unknown")
    status = "ok" if total >= 4 else "warn"
    return Check(
        "memory", status, f"{total:.1f} GiB", "" if status == "ok" else "4 GiB or more advised"
    )


def print_checks(checks: list[Check]) -> None:
    from rich.console import Console
    from rich.table import Table

    style = {"ok": "green", "warn": "yellow", "fail": "red"}
    table = Table(title="repolm doctor", title_justify="left")
    for col in ("check", "status", "detail", "how to fix"):
        table.add_column(col)
    for c in checks:
        table.add_row(c.name, f"[{style[c.status]}]{c.status}[/]", c.detail, c.fix)
    Console().print(table)
