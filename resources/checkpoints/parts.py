"""Checkpoint parts as Parquet: streamed batches regrouped into row groups and encoded as they arrive."""

from __future__ import annotations

from collections.abc import Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from resources.checkpoints.format import column_encodings

WRITE_CHUNK_ROWS = 65_536


def rechunked(reader: pa.RecordBatchReader, schema: pa.Schema) -> Iterator[pa.RecordBatch]:
    """Regroup streamed batches into chunks of WRITE_CHUNK_ROWS rows: one Parquet row group each."""
    pending: list[pa.RecordBatch] = []
    pending_rows = 0
    for batch in reader:
        pending.append(pa.RecordBatch.from_arrays(batch.columns, schema=schema))
        pending_rows += batch.num_rows
        if pending_rows >= WRITE_CHUNK_ROWS:
            yield pa.Table.from_batches(pending, schema=schema).combine_chunks().to_batches()[0]
            pending, pending_rows = [], 0
    if pending_rows:
        yield pa.Table.from_batches(pending, schema=schema).combine_chunks().to_batches()[0]


class PartWriter:
    """One Parquet part encoded as its chunks arrive: memory holds compressed bytes, not the rows.
    Column encodings are chosen from the part's first chunk (see `column_encodings`)."""

    def __init__(self, schema: pa.Schema, codec: str) -> None:
        self._schema, self._codec = schema, codec
        self._sink = pa.BufferOutputStream()
        self._writer: pq.ParquetWriter | None = None
        self.rows = 0

    def write(self, chunk: pa.RecordBatch) -> None:
        if self._writer is None:
            self._writer = self._open(column_encodings(chunk))
        self._writer.write_batch(chunk)
        self.rows += chunk.num_rows

    def finish(self) -> bytes:
        (self._writer or self._open({})).close()
        return self._sink.getvalue().to_pybytes()

    def _open(self, encodings: dict[str, str]) -> pq.ParquetWriter:
        dictionary = [name for name in self._schema.names if name not in encodings]
        return pq.ParquetWriter(self._sink, self._schema, compression=self._codec, use_dictionary=dictionary,
                                column_encoding=encodings or None)
