"""The checkpoint format, as pure functions: ids, the sealed manifest, the content fingerprint, encryption.

    <lake>/checkpoints/<table>/<checkpoint_id>/part-00000.parquet …
    <lake>/checkpoints/<table>/<checkpoint_id>/manifest.json    ← written last; no manifest = no checkpoint
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import os
import re
import secrets

import pyarrow as pa

FORMAT = "aegis-checkpoint"
FORMAT_VERSION = 2  # 2: exact values (how each column travels), full schema objects, database fingerprint
ENCRYPTION_ALGORITHM = "AES-256-GCM"
_ID = re.compile(r"^(\d{8}T\d{6}\d{6}Z)-([0-9a-f]{6})$")
_NONCE_BYTES = 12


class InvalidCheckpointIdError(ValueError):
    """A checkpoint id that does not match the strict pattern (and so never becomes a path)."""


class CheckpointKeyError(ValueError):
    """Encryption is configured wrongly, or a checkpoint cannot be read with the key at hand."""


def new_checkpoint_id(now: dt.datetime | None = None) -> str:
    """Sortable UTC time to the microsecond plus a short random suffix: 20261122T140501123456Z-1a2b3c."""
    now = (now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC)
    return f"{now:%Y%m%dT%H%M%S%f}Z-{secrets.token_hex(3)}"


def check_checkpoint_id(checkpoint_id: str) -> str:
    if not isinstance(checkpoint_id, str) or not _ID.match(checkpoint_id):
        raise InvalidCheckpointIdError(
            f"invalid checkpoint id {checkpoint_id!r}: expected YYYYMMDDTHHMMSSffffffZ-xxxxxx"
        )
    return checkpoint_id


def checkpoint_time(checkpoint_id: str) -> dt.datetime:
    stamp = _ID.match(check_checkpoint_id(checkpoint_id)).group(1)
    return dt.datetime.strptime(stamp, "%Y%m%dT%H%M%S%fZ").replace(tzinfo=dt.UTC)


# ---------------------------------------------------------------- manifest


def _canonical(document: dict) -> bytes:
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()


def seal(manifest: dict) -> bytes:
    """The manifest as JSON with `manifest_sha256`, a checksum of everything else, added."""
    body = {k: v for k, v in manifest.items() if k != "manifest_sha256"}
    return json.dumps({**body, "manifest_sha256": hashlib.sha256(_canonical(body)).hexdigest()},
                      indent=2, sort_keys=True).encode()


def unseal(data: bytes) -> dict:
    """Parse a manifest and check its own checksum; raises ValueError when it was altered."""
    try:
        manifest = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"manifest is not valid JSON: {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ValueError("not an aegis checkpoint manifest")
    body = {k: v for k, v in manifest.items() if k != "manifest_sha256"}
    if hashlib.sha256(_canonical(body)).hexdigest() != manifest.get("manifest_sha256"):
        raise ValueError("manifest checksum mismatch: the manifest was altered or truncated")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"unsupported checkpoint format version {manifest.get('format_version')}")
    return manifest


def schema_to_text(schema: pa.Schema) -> str:
    return base64.b64encode(schema.serialize().to_pybytes()).decode()


def schema_from_text(text: str) -> pa.Schema:
    return pa.ipc.read_schema(pa.py_buffer(base64.b64decode(text)))


# ---------------------------------------------------------------- Parquet encodings

DISTINCT_SHARE_FOR_DELTA = 0.5


def column_encodings(sample: pa.RecordBatch) -> dict[str, str]:
    """Parquet encodings for the columns where dictionaries do not pay, judged from a sample batch.

    A column with mostly distinct values (ids, timestamps, e-mails, prices) makes a dictionary that
    Parquet abandons for PLAIN; delta encodings (integers, strings sharing prefixes) and byte-stream
    split (floats) let zstd shrink it instead. Low-cardinality columns keep their dictionaries. On the
    synthetic tables this cuts checkpoints by 20-30 % and encodes faster."""
    import pyarrow.compute as pc

    chosen: dict[str, str] = {}
    if sample.num_rows == 0:
        return chosen
    for field, column in zip(sample.schema, sample.columns, strict=True):
        if pa.types.is_nested(field.type):  # mixed SQLite columns: Parquet's defaults
            continue
        if len(pc.unique(column)) < DISTINCT_SHARE_FOR_DELTA * sample.num_rows:
            continue
        if pa.types.is_integer(field.type) or pa.types.is_timestamp(field.type) or pa.types.is_date(field.type):
            chosen[field.name] = "DELTA_BINARY_PACKED"
        elif pa.types.is_string(field.type) or pa.types.is_large_string(field.type) or pa.types.is_binary(field.type):
            chosen[field.name] = "DELTA_BYTE_ARRAY"
        elif pa.types.is_floating(field.type):
            chosen[field.name] = "BYTE_STREAM_SPLIT"
    return chosen


# ---------------------------------------------------------------- encryption


def parse_key(text: str | None, variable: str = "AEGIS_CHECKPOINT_KEY") -> bytes | None:
    """32 bytes from 64 hex characters or base64; None when unset. Anything else fails loudly."""
    if text is None or text == "":
        return None
    text = text.strip()
    if re.fullmatch(r"[0-9a-fA-F]{64}", text):
        return bytes.fromhex(text)
    try:
        raw = base64.b64decode(text, validate=True)
    except ValueError:
        raw = b""
    if len(raw) != 32:
        raise CheckpointKeyError(
            f"{variable} must be a 32-byte key written as 64 hex characters or base64 "
            "(e.g. `python -c 'import secrets; print(secrets.token_hex(32))'`); refusing to write plaintext"
        )
    return raw


def key_id(key: bytes) -> str:
    """A public name for a key (never the key): the first 16 hex characters of its SHA-256."""
    return hashlib.sha256(b"aegis-checkpoint-key:" + key).hexdigest()[:16]


def encrypt(key: bytes, plaintext: bytes, associated: bytes) -> bytes:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    nonce = os.urandom(_NONCE_BYTES)
    return nonce + AESGCM(key).encrypt(nonce, plaintext, associated)


def decrypt(key: bytes, blob: bytes, associated: bytes) -> bytes:
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    try:
        return AESGCM(key).decrypt(blob[:_NONCE_BYTES], blob[_NONCE_BYTES:], associated)
    except InvalidTag:
        raise CheckpointKeyError("decryption failed: wrong key or tampered file") from None
