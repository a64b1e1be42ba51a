"""Masking personal data: keyed hashes (HMAC-SHA256) that still join, and names cut to initials."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import ClassVar

import dagster as dg
import duckdb
import pyarrow as pa

from resources.identifiers import quote
from resources.urls import ConfigurationError

DEV_KEY_PREFIX = "dev-only"
_warned: list[bool] = []  # warn about a development key once per process, not once per table


class PiiMasker(dg.ConfigurableResource):
    """Masks PII columns of Arrow tables with the secret `AEGIS_PII_KEY`; the key never leaves here."""

    key: str
    ENV_VAR: ClassVar[str] = "AEGIS_PII_KEY"

    def mask(self, table: pa.Table, hash_columns: Sequence[str], initials_columns: Sequence[str]) -> pa.Table:
        """Replace `hash_columns` by hex HMAC-SHA256 and `initials_columns` by initials ("M. S.")."""
        present = set(table.column_names)
        hashed = [c for c in hash_columns if c in present]
        named = [c for c in initials_columns if c in present]
        if not hashed and not named:
            return table
        inner, outer = self._pads()
        replacements = [
            f"CASE WHEN {quote(c)} IS NULL THEN NULL ELSE sha256($outer::BLOB || "
            f"unhex(sha256($inner::BLOB || encode(CAST({quote(c)} AS VARCHAR))))) END AS {quote(c)}"
            for c in hashed
        ] + [
            f"array_to_string(list_transform(list_filter(string_split(CAST({quote(c)} AS VARCHAR), ' '), "
            f"lambda p: p <> ''), lambda p: upper(left(p, 1)) || '.'), ' ') AS {quote(c)}"
            for c in named
        ]
        with duckdb.connect() as con:
            con.register("unmasked", table)
            result = con.sql(
                f"SELECT * REPLACE ({', '.join(replacements)}) FROM unmasked", params={"inner": inner, "outer": outer}
            ).to_arrow_table()
        return result.cast(pa.schema([
            pa.field(f.name, pa.string() if f.name in hashed or f.name in named else f.type) for f in table.schema
        ]))

    def _pads(self) -> tuple[bytes, bytes]:
        """HMAC's inner and outer keyed pads (RFC 2104), so DuckDB can compute HMAC with two SHA-256s."""
        if not self.key:
            raise ConfigurationError(f"{self.ENV_VAR} is empty: set a secret key to mask personal data")
        if self.key.startswith(DEV_KEY_PREFIX) and not _warned:
            _warned.append(True)
            dg.get_dagster_logger().warning(
                f"{self.ENV_VAR} is a development key; set a real secret before handling production data"
            )
        key = self.key.encode()
        if len(key) > 64:
            key = hashlib.sha256(key).digest()
        key = key.ljust(64, b"\0")
        return bytes(b ^ 0x36 for b in key), bytes(b ^ 0x5C for b in key)
