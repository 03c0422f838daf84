"""Logging and progress: to the terminal (rich on a TTY, plain lines otherwise) and to OUT/logs/.

Log only counts, names and paths: never a file's content, a patch or a secret's value.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

from repolm.layout import RunLayout

log = logging.getLogger("repolm")

_state = {"quiet": False, "tty": False}


def setup_logging(verbose: bool = False, quiet: bool = False) -> None:
    """Terminal logging. Called once by the CLI; library users get plain `logging`."""
    quiet = quiet or launch_rank() != 0  # under torchrun / accelerate launch, rank 0 speaks
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    _state["quiet"] = quiet
    _state["tty"] = sys.stderr.isatty()
    for h in list(log.handlers):
        if not isinstance(h, logging.FileHandler):
            log.removeHandler(h)
    handler: logging.Handler
    if _state["tty"]:
        from rich.logging import RichHandler

        handler = RichHandler(
            console=console(), show_path=False, show_time=False, markup=False, rich_tracebacks=False
        )
        handler.setFormatter(logging.Formatter("%(message)s"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)-7s %(message)s", "%H:%M:%S")
        )
    handler.setLevel(level)
    log.addHandler(handler)
    log.setLevel(logging.DEBUG)
    log.propagate = False


def launch_rank() -> int:
    """This process's rank under torchrun / accelerate launch (0 otherwise)."""
    return int(os.environ.get("RANK", "0"))


@contextlib.contextmanager
def log_to_file(out_dir: Path, command: str) -> Iterator[Path]:
    """Also write everything (debug included) to OUT/logs/<command>-<time>.log."""
    logs = RunLayout(out_dir).logs_dir
    rank = launch_rank()
    logs.mkdir(parents=True, exist_ok=True)
    suffix = f"-rank{rank}" if rank else ""
    path = logs / f"{command}-{datetime.now().strftime('%Y%m%d-%H%M%S')}{suffix}.log"
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(message)s"))
    handler.setLevel(logging.DEBUG)
    log.addHandler(handler)
    if log.level == logging.NOTSET:
        log.setLevel(logging.DEBUG)
    try:
        yield path
    finally:
        log.removeHandler(handler)
        handler.close()


_console = None


def console():
    global _console
    if _console is None:
        from rich.console import Console

        _console = Console(stderr=True)
    return _console


class Progress:
    """Advance-only progress: a rich bar on a TTY, a plain line every `every` seconds otherwise."""

    def __init__(self, description: str, total: int | None, unit: str, every: float = 10.0):
        self.description, self.total, self.unit, self.every = description, total, unit, every
        self.done = 0
        self.start = self._last = time.monotonic()
        self._bar = None
        if _state["tty"] and not _state["quiet"]:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )
            from rich.progress import Progress as RichProgress

            self._bar = RichProgress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn(unit),
                TimeElapsedColumn(),
                TextColumn("eta"),
                TimeRemainingColumn(),
                console=console(),
                transient=True,
            )
            self._bar.start()
            self._task = self._bar.add_task(description, total=total)

    def advance(self, n: int = 1) -> None:
        self.done += n
        if self._bar is not None:
            self._bar.advance(self._task, n)
            return
        now = time.monotonic()
        if now - self._last >= self.every:
            self._last = now
            log.info(self._line(now))

    def set_total(self, total: int) -> None:
        self.total = total
        if self._bar is not None:
            self._bar.update(self._task, total=total)

    def _line(self, now: float) -> str:
        rate = self.done / max(now - self.start, 1e-9)
        if self.total:
            pct = 100 * self.done / self.total
            eta = (self.total - self.done) / rate if rate else 0
            return (
                f"{self.description}: {self.done}/{self.total} {self.unit} ({pct:.0f}%), "
                f"{_rate(rate)}, eta {eta:.0f}s"
            )
        return f"{self.description}: {self.done} {self.unit}, {_rate(rate)}"

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None


def _rate(per_second: float) -> str:
    """A rate that reads well both for thousands of rows and for slow training steps."""
    if per_second >= 10:
        return f"{per_second:.0f}/s"
    if per_second >= 0.1:
        return f"{per_second:.2g}/s"
    return f"{1 / per_second:.0f} s each" if per_second > 0 else "0/s"


@contextlib.contextmanager
def progress(description: str, total: int | None = None, unit: str = "items") -> Iterator[Progress]:
    bar = Progress(description, total, unit)
    try:
        yield bar
    finally:
        bar.close()
