"""The chunk stage's output table, OUT/chunk/chunks.parquet: its schema, and the rows of one
batch as the workers build them.
"""

from __future__ import annotations

import pyarrow as pa

from repolm.chunk.model import Unit
from repolm.mine.tables import utf8_array

TS = pa.timestamp("ms", tz="UTC")
SCHEMA = pa.schema(
    [
        ("sha", pa.string()),  # the commit: the cutoff commit for snapshot rows
        ("path", pa.string()),
        ("language", pa.string()),
        # function | method | type | module | test | section | window | lines
        ("kind", pa.string()),
        ("name", pa.string()),
        ("qualified_name", pa.string()),
        ("parent", pa.string()),
        ("start_line", pa.int32()),
        ("end_line", pa.int32()),
        ("change_type", pa.string()),  # null for snapshot rows
        ("text", pa.string()),
        ("source", pa.string()),  # snapshot | change
        ("blob", pa.string()),  # the file version the text comes from
        ("commit_time", TS),
        ("split", pa.string()),  # train | val | test
    ]
)


class Rows:
    """Output rows, turned into a table at the end of a batch; texts are kept as UTF-8 bytes,
    decoded (with replacement, as `Unit.text` does) only where they are not plain ASCII."""

    def __init__(self) -> None:
        self.rows: list[tuple] = []

    def add(
        self,
        sha: str,
        path: str,
        language: str | None,
        u: Unit,
        change_type: str | None,
        source: str,
        blob: str | None,
        when: int,
        part: str,
    ) -> None:
        raw = u.source[u.start_byte : u.end_byte]
        text = raw if raw.isascii() else raw.decode("utf-8", "replace").encode()
        self.rows.append(
            (
                sha,
                path,
                language,
                u.kind,
                u.name,
                u.qualified_name,
                u.parent,
                u.start_line,
                u.end_line,
                change_type,
                text,
                source,
                blob,
                when,
                part,
            )
        )

    def table(self) -> pa.Table:
        columns = list(zip(*self.rows, strict=True)) if self.rows else [[] for _ in SCHEMA]
        arrays = [
            utf8_array(values)
            if field.name == "text"  # type: ignore[arg-type]
            else pa.array(values, pa.int64()).cast(TS)
            if field.name == "commit_time"
            else pa.array(values, field.type)
            for values, field in zip(columns, SCHEMA, strict=True)
        ]
        return pa.Table.from_arrays(arrays, schema=SCHEMA)
