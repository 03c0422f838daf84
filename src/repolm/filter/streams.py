"""Tables read a row group at a time, and work started one item ahead: how the filter stage
keeps its scrubbing processes busy while it de-duplicates and writes."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pyarrow as pa
import pyarrow.parquet as pq

from repolm.filter.exclude import ExcludeRules, path_reason

T = TypeVar("T")
R = TypeVar("R")


class PathReasons(dict[tuple[str, str | None], str | None]):
    """`path_reason` memoised by (path, language): history repeats a few thousand paths."""

    def __init__(self, rules: ExcludeRules) -> None:
        super().__init__()
        self._rules = rules

    def __missing__(self, key: tuple[str, str | None]) -> str | None:
        value = self[key] = path_reason(*key, self._rules)
        return value


def row_groups(pf: pq.ParquetFile) -> Iterator[pa.Table]:
    for i in range(pf.num_row_groups):
        yield pf.read_row_group(i)


def columns(table: pa.Table, *names: str) -> list[list[Any]]:
    return [table.column(name).to_pylist() for name in names]


def rows(table: pa.Table, indices: list[int]) -> pa.Table:
    """The rows at `indices` (ascending): the table itself when that is all of them."""
    if len(indices) == table.num_rows:
        return table
    return table.take(pa.array(indices, pa.int64()))


def replace_column(table: pa.Table, name: str, values: pa.Array) -> pa.Table:
    i = table.schema.get_field_index(name)
    return table.set_column(i, table.schema.field(i), values)


def ahead(items: Iterator[T], start: Callable[[T], R]) -> Iterator[tuple[T, R]]:
    """(item, start(item)) for each item, `start` called one item ahead: the next row group's
    texts are being scrubbed while the caller finishes this one."""
    started: deque[tuple[T, R]] = deque()
    for item in items:
        started.append((item, start(item)))
        if len(started) > 1:
            yield started.popleft()
    yield from started
