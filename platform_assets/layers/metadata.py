"""The metadata every asset reports: rows, bytes, seconds, column schema and a small preview."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import dagster as dg
import pyarrow as pa

PREVIEW_ROWS = 5


@contextmanager
def stopwatch() -> Iterator[dict]:
    """`with stopwatch() as clock: ...` then `clock["seconds"]`."""
    clock: dict = {}
    started = time.perf_counter()
    try:
        yield clock
    finally:
        clock["seconds"] = round(time.perf_counter() - started, 3)


def column_schema(schema: pa.Schema) -> dg.TableSchema:
    return dg.TableSchema(columns=[dg.TableColumn(name=f.name, type=str(f.type)) for f in schema])


def preview_markdown(table: pa.Table, rows: int = PREVIEW_ROWS) -> str:
    """A markdown table of the first rows, without pulling in pandas' optional tabulate."""
    head = table.slice(0, rows).to_pylist()
    names = table.column_names
    lines = ["| " + " | ".join(names) + " |", "|" + "---|" * len(names)]
    for row in head:
        lines.append("| " + " | ".join(_cell(row[n]) for n in names) + " |")
    return "\n".join(lines)


def _cell(value: object) -> str:
    if value is None:
        return "∅"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value).replace("|", "\\|")[:40]


def table_metadata(table: pa.Table, *, seconds: float, bytes_: int, path: str | None = None, **extra) -> dict:
    metadata = {
        "dagster/row_count": dg.MetadataValue.int(table.num_rows),
        "bytes": dg.MetadataValue.int(int(bytes_)),
        "seconds": dg.MetadataValue.float(float(seconds)),
        "dagster/column_schema": column_schema(table.schema),
        "preview": dg.MetadataValue.md(preview_markdown(table)),
    }
    if path:
        metadata["path"] = dg.MetadataValue.path(path)
    metadata.update(extra)
    return metadata
