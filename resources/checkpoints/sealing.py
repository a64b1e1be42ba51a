"""Per-subject sealing of personal columns in checkpoints: the ground of the right to erasure.

In a table that holds people (`AEGIS_SUBJECT_TABLES`, default `customers:id:name,email,cpf,phone`: table id,
the column naming the person, the personal columns), each personal value is encrypted in the checkpoint with
that person's own key (AES-256-GCM, bound to table, column and person), on top of the checkpoint's own
encryption. Destroying a person's key (resources/checkpoints/subject_keys.py) makes their values in every kept
checkpoint unreadable without rewriting any checkpoint; on restore they come back as NULL and every other value exactly.
"""

from __future__ import annotations

import json
import os

import pyarrow as pa

from resources.subjects import Sealing, SealingError

_NONCE = 12


SEALED = "_aegis_sealed"  # the stored column holding a row's personal values, sealed together


def sealed_schema(schema: pa.Schema, sealing: Sealing) -> pa.Schema:
    """As stored: the other columns as they are, the personal ones together in one binary column (one nonce and
    one tag per row, not per value: half the bytes)."""
    return pa.schema([*(f for f in schema if f.name not in sealing.columns), pa.field(SEALED, pa.binary())])


def _aad(table: str, subject: str) -> bytes:
    return f"{table}/{subject}".encode()


def subjects_of(batch: pa.RecordBatch, sealing: Sealing) -> list[str | None]:
    return [None if v is None else str(v) for v in batch.column(sealing.subject).to_pylist()]


def seal_batch(batch: pa.RecordBatch, table: str, sealing: Sealing, keys: dict[str, bytes]) -> pa.RecordBatch:
    """Each row's personal values, as JSON, encrypted with its person's key (a row naming no person: kept plain)."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    subjects = subjects_of(batch, sealing)
    ciphers = {s: AESGCM(keys[s]) for s in set(subjects) if s is not None}
    values = zip(*(batch.column(c).to_pylist() for c in sealing.columns), strict=True)
    sealed = []
    for subject, row in zip(subjects, values, strict=True):
        text = json.dumps(row, ensure_ascii=False, separators=(",", ":")).encode()
        if subject is None:
            sealed.append(b"\x00" + text)
            continue
        nonce = os.urandom(_NONCE)
        sealed.append(b"\x01" + nonce + ciphers[subject].encrypt(nonce, text, _aad(table, subject)))
    kept = [batch.column(f.name) for f in batch.schema if f.name not in sealing.columns]
    return pa.RecordBatch.from_arrays([*kept, pa.array(sealed, pa.binary())], schema=sealed_schema(batch.schema,
                                                                                                  sealing))


def unseal_batch(batch: pa.RecordBatch, table: str, sealing: Sealing, keys: dict[str, list[bytes]],
                 schema: pa.Schema) -> tuple[pa.RecordBatch, int]:
    """The original columns; a person whose keys were destroyed gets NULL personal values. Returns the batch and
    how many of its rows belonged to such a person. A row no key of its person opens is an error (tampering)."""
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    subjects = subjects_of(batch, sealing)
    erased, rows = 0, []
    for subject, blob in zip(subjects, batch.column(SEALED).to_pylist(), strict=True):
        if blob[:1] == b"\x00":
            rows.append(json.loads(blob[1:]))
            continue
        if subject not in keys:
            erased += 1
            rows.append([None] * len(sealing.columns))  # erased: the key is gone
            continue
        nonce, body = blob[1:1 + _NONCE], blob[1 + _NONCE:]
        for key in keys[subject]:
            try:
                rows.append(json.loads(AESGCM(key).decrypt(nonce, body, _aad(table, subject))))
                break
            except InvalidTag:
                continue
        else:
            raise SealingError(f"{table}: the personal values of person {subject} open with no key of theirs "
                               "(tampered, or a key was lost)")
    personal = dict(zip(sealing.columns, zip(*rows, strict=True), strict=True)) if rows else {}
    arrays = [pa.array(personal.get(f.name, ()), f.type) if f.name in sealing.columns else batch.column(f.name)
              for f in schema]
    return pa.RecordBatch.from_arrays(arrays, schema=schema), erased
