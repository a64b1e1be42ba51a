"""Per-subject sealing of personal columns in checkpoints: the ground of the right to erasure.

In a table that holds people (`AEGIS_SUBJECT_TABLES`, default `customers:id:name,email,cpf,phone`: table id,
the column naming the person, the personal columns), each personal value is encrypted in the checkpoint with
that person's own key (AES-256-GCM, bound to table, column and person), on top of the checkpoint's own
encryption. Destroying a person's key (resources/subject_keys.py) makes their values in every kept checkpoint
unreadable without rewriting any checkpoint; on restore they come back as NULL and every other value exactly.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import pyarrow as pa

SUBJECTS_VAR = "AEGIS_SUBJECT_TABLES"
DEFAULT_SUBJECTS = "customers:id:name,email,cpf,phone"
_NONCE = 12


class SealingError(ValueError):
    """A subject table that cannot be sealed as configured; the message names what is wrong."""


@dataclass(frozen=True)
class Sealing:
    subject: str  # the column naming the person
    columns: tuple[str, ...]  # their personal columns (text)
    strict: bool = True  # configured by the user: a missing or non-text column is an error


def subject_tables(text: str | None = None) -> dict[str, Sealing]:
    """Table id -> its sealing, from `table:subject_column:col,col;…` (the default when unset; "none": none)."""
    text = os.environ.get(SUBJECTS_VAR) if text is None else text
    strict = bool(text and text.strip())
    text = text if strict else DEFAULT_SUBJECTS
    if text.strip().lower() == "none":
        return {}
    found = {}
    for entry in (e.strip() for e in text.split(";") if e.strip()):
        parts = entry.split(":")
        if len(parts) != 3 or not all(parts) or not parts[2].strip(","):
            raise SealingError(f"{SUBJECTS_VAR}: {entry!r} is not `table:subject_column:personal,columns`")
        found[parts[0]] = Sealing(parts[1], tuple(c.strip() for c in parts[2].split(",") if c.strip()), strict)
    return found


def sealing_for(table: str, schema: pa.Schema) -> Sealing | None:
    """How `table` is sealed, given its columns. The default (the platform's customers) applies only to the text
    columns a table of that name has; a configured table must have them all (else SealingError)."""
    sealing = subject_tables().get(table)
    if sealing is None:
        return None
    if sealing.strict:
        check_sealable(table, schema, sealing)
        return sealing
    kept = tuple(c for c in sealing.columns if c in schema.names and pa.types.is_string(schema.field(c).type))
    return Sealing(sealing.subject, kept, False) if kept and sealing.subject in schema.names else None


def check_sealable(table: str, schema: pa.Schema, sealing: Sealing) -> None:
    missing = [c for c in (sealing.subject, *sealing.columns) if c not in schema.names]
    if missing:
        raise SealingError(f"{SUBJECTS_VAR}: table {table!r} has no column {', '.join(missing)}")
    for name in sealing.columns:
        if not pa.types.is_string(schema.field(name).type):
            raise SealingError(f"{SUBJECTS_VAR}: {table}.{name} is {schema.field(name).type}, not text; only text "
                               "columns are sealed per person")


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
