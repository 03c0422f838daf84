"""The report stage: what the run directory holds, read once, rendered into OUT/report.html.

Reads the manifest, the filter, build, train and eval stages' JSON, the commits' times and
split (never their text: `mine/` holds the history before secrets are scrubbed) and each
model's TensorBoard scalars (the learning rate and hardware samples over time are only there).
Whatever is missing is left out and the page says so.
"""

from __future__ import annotations

import json
import logging
import struct
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from repolm.fsutil import write_text_atomic
from repolm.layout import RunLayout
from repolm.report.html import render_report
from repolm.report.inputs import INPUTS, ReportInputs, Scalars, missing_inputs
from repolm.stage import StageContext, StageResult

log = logging.getLogger(__name__)

Event = tuple[str, float, float]  # (tag, step, value)


def run_stage(ctx: StageContext) -> StageResult:
    inputs = collect(ctx.out)
    page = render_report(inputs)
    path = ctx.layout.report_html
    write_text_atomic(path, page)
    stats = {
        "bytes": len(page.encode("utf-8")),
        "plots": page.count("<svg"),
        "missing": missing_inputs(inputs),
    }
    missing = f"; without {', '.join(stats['missing'])}" if stats["missing"] else ""
    return StageResult(
        stats=stats,
        summary=f"{path.name}: {stats['plots']} plots, {stats['bytes'] / 1024:,.0f} KiB{missing}",
    )


def render(out: Path) -> str:
    """The report of the run directory `out`, as HTML."""
    return render_report(collect(out))


def collect(out: Path) -> ReportInputs:
    """Everything the report shows, from the run directory."""
    found: dict[str, Any] = {}
    unreadable = []
    for name, (file, _) in INPUTS.items():
        try:
            found[name] = _read_json(out / file)
        except (OSError, ValueError) as e:
            log.warning(f"report: cannot read {file}: {e}")
            unreadable.append(file)
            found[name] = None
    found["manifest"] = found["manifest"] or {}
    models = list((found["train"] or {}).get("models") or {})
    return ReportInputs(
        run_dir=str(out),
        commits=commit_times(out),
        scalars={m: read_scalars(RunLayout(out).tensorboard_dir(m)) for m in models},
        unreadable=tuple(unreadable),
        **found,
    )


def _read_json(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    return data


def commit_times(out: Path) -> dict[str, list[Any]] | None:
    """Each commit's time (epoch seconds) and split: from the filter stage's table (which has
    the split), else the miner's; only those two columns are read."""
    import pyarrow.parquet as pq

    layout = RunLayout(out)
    for path in (layout.filtered("commits"), layout.mined_commits):
        if not path.is_file():
            continue
        try:
            names = pq.read_schema(path).names
            table = pq.read_table(path, columns=[c for c in ("commit_time", "split") if c in names])
        except Exception as e:  # noqa: BLE001 - a damaged table only costs the plot
            log.warning(f"report: cannot read {path}: {e}")
            continue
        if "commit_time" not in table.column_names:
            continue
        times = [t.timestamp() for t in table.column("commit_time").to_pylist() if t is not None]
        splits = (
            table.column("split").to_pylist()
            if "split" in table.column_names
            else [None] * len(times)
        )
        return {"time": times, "split": splits[: len(times)]}
    return None


# -- TensorBoard --------------------------------------------------------------------------------


def read_scalars(tb_dir: Path) -> Scalars:
    """Every scalar of a model's TensorBoard event files, by tag, as (step, value), the files
    of one training run merged (see `merge_runs`); {} without any."""
    files = sorted(tb_dir.glob("events.out.tfevents.*"), key=_created) if tb_dir.is_dir() else []
    runs = []
    for f in files:
        try:
            runs.append(list(read_events(f)))
        except Exception as e:  # noqa: BLE001 - unreadable events only cost the plots
            log.warning(f"report: cannot read {f}: {e}")
    return merge_runs(runs)


def _created(path: Path) -> tuple[int, float, str]:
    """Event files are named events.out.tfevents.<unix time>.<host>..."""
    part = path.name.split(".")[3] if path.name.count(".") >= 3 else ""
    return (int(part) if part.isdigit() else 0, path.stat().st_mtime, path.name)


def merge_runs(runs: Sequence[Sequence[Event]]) -> Scalars:
    """One series per tag from the event files of successive processes, oldest first: a
    process that resumed at step k supersedes the events of earlier files from step k on (the
    steps after the checkpoint were done again), and one that started over at step 1
    supersedes them all (the train stage leaves an earlier configuration's files behind)."""
    kept: list[Event] = []
    for events in runs:
        if not events:
            continue
        train = [s for tag, s, _ in events if tag.startswith("train/")]
        start = min(train or [s for _, s, _ in events])
        kept = [e for e in kept if e[1] < start] + list(events)
    out: Scalars = {}
    for tag, step, value in kept:
        out.setdefault(tag, []).append((step, value))
    return out


def read_events(path: Path) -> Iterator[Event]:
    """The scalar summaries of a TFRecord event file (length, crc, Event proto, crc); stops
    at a record cut short by a crash. The few protobuf fields needed are decoded here:
    tensorboardX's generated classes would import torch with them (seconds)."""
    data = path.read_bytes()
    at = 0
    while at + 12 <= len(data):
        (n,) = struct.unpack_from("<Q", data, at)
        if at + 12 + n + 4 > len(data):
            break
        record = data[at + 12 : at + 12 + n]
        at += 12 + n + 4
        step = 0.0
        summaries = []
        for field, value in _fields(record):
            if field == 2:  # Event.step
                step = float(value)
            elif field == 5:  # Event.summary
                summaries.append(value)
        for summary in summaries:
            for field, value in _fields(summary):
                if field == 1:  # Summary.value
                    scalar = _scalar(value)
                    if scalar is not None:
                        yield scalar[0], step, scalar[1]


def _scalar(value: bytes) -> tuple[str, float] | None:
    """Summary.Value's tag (1) and simple_value (2), None for other kinds of summary."""
    tag, number = None, None
    for field, v in _fields(value):
        if field == 1:
            tag = bytes(v).decode("utf-8", "replace")
        elif field == 2:
            number = struct.unpack("<f", v)[0]
    return (tag, number) if tag is not None and number is not None else None


def _fields(buf: bytes) -> Iterator[tuple[int, Any]]:
    """(field number, value) of a protobuf message: varints as int, 64- and 32-bit fields
    and length-delimited ones as bytes."""
    at = 0
    while at < len(buf):
        key, at = _varint(buf, at)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, at = _varint(buf, at)
        elif wire == 1:
            value, at = buf[at : at + 8], at + 8
        elif wire == 2:
            size, at = _varint(buf, at)
            value, at = buf[at : at + size], at + size
        elif wire == 5:
            value, at = buf[at : at + 4], at + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        yield field, value


def _varint(buf: bytes, at: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = buf[at]
        at += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, at
        shift += 7
