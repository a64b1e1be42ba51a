"""Which tables hold people, and which of their columns are personal: `AEGIS_SUBJECT_TABLES`
(`table:subject_column:col,col;…`, default `customers:id:name,email,cpf,phone`, "none" for none). Checkpoints seal
those columns per person (resources/checkpoints/sealing.py); a capture fingerprints the table without them too, so
a restore after an erasure can still be verified."""

from __future__ import annotations

import os
from dataclasses import dataclass

import pyarrow as pa

SUBJECTS_VAR = "AEGIS_SUBJECT_TABLES"
DEFAULT_SUBJECTS = "customers:id:name,email,cpf,phone"


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
