"""Why training stops before its last step: SIGINT/SIGTERM (after a checkpoint, to be resumed)
or the wall clock, with every process agreeing on it."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from repolm.errors import RepolmError
from repolm.logs import log

if TYPE_CHECKING:
    from accelerate import Accelerator


class TrainingInterrupted(RepolmError):
    """SIGINT/SIGTERM: a checkpoint was written; the next run continues from it."""

    exit_code = 130


@contextmanager
def stop_signals() -> Iterator[dict[str, Any]]:
    """SIGINT/SIGTERM set a flag; the loop checkpoints at the end of the step and stops."""
    flag: dict[str, Any] = {"signal": None}
    if threading.current_thread() is not threading.main_thread():  # signals need the main one
        yield flag
        return

    def handler(signum: int, frame: Any) -> None:
        if flag["signal"] is not None:  # a second ^C: stop now
            raise KeyboardInterrupt
        flag["signal"] = signal.Signals(signum).name
        log.warning(f"{flag['signal']}: finishing this step, saving a checkpoint, then stopping")

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield flag
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def stop_requested(
    accelerator: Accelerator, signals: dict[str, Any], max_minutes: float | None, t_start: float
) -> str | None:
    """Every process agrees: a signal on any of them or the clock stops all of them."""
    import torch

    code = 0
    if signals["signal"] is not None:
        code = 2 if signals["signal"] == "SIGTERM" else 1
    elif max_minutes and time.monotonic() - t_start > max_minutes * 60:
        code = 3
    if accelerator.num_processes > 1:
        t = torch.tensor(code, device=accelerator.device)
        code = int(accelerator.reduce(t, reduction="max"))
    return {0: None, 1: "SIGINT", 2: "SIGTERM", 3: "max_minutes"}[code]
