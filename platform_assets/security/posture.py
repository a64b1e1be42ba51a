"""The security posture as plain judgements over the configuration (and, where it takes a look, the data): each
returns a `Judgement` — passed, or a WARN/ERROR finding saying what is wrong and what to do. Secrets are never
part of a finding (URLs redacted, keys only said to be present). Used by the posture checks (security.py)."""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

import pyarrow as pa

from resources.checkpoints.format import CheckpointKeyError
from resources.checkpoints.keys import KEY_VAR, RING_VAR, parse_ring
from resources.urls import redact

WARN, ERROR = "WARN", "ERROR"
DEFAULT_PASSWORDS = {"postgres", "password", "aegis", "admin", "changeme", "change-me", "secret", "dagster", "root",
                     "123456", "pass"}
DATABASE_URLS = ("AEGIS_SOURCE_URL", "AEGIS_WAREHOUSE_URL")


@dataclass(frozen=True)
class Judgement:
    passed: bool
    severity: str
    description: str
    fix: str = ""


def _ok(description: str) -> Judgement:
    return Judgement(True, WARN, description)


def checkpoints_encrypted(env: Mapping[str, str]) -> Judgement:
    try:
        ring = parse_ring(env.get(RING_VAR), env.get(KEY_VAR))
    except CheckpointKeyError as exc:
        return Judgement(False, ERROR, str(exc), f"fix {RING_VAR}: checkpoints cannot be written until it reads")
    if ring.current is None:
        return Judgement(False, WARN, "checkpoints are written in plaintext",
                         f"set {RING_VAR} (label*=<64 hex>) and keep the key safe")
    return _ok(f"checkpoints encrypted (AES-256-GCM) with {ring.label(ring.current)}; {len(ring.keys)} key(s)")


def pii_key_is_real(env: Mapping[str, str]) -> Judgement:
    key = env.get("AEGIS_PII_KEY", "")
    if not key or key.startswith("dev-only") or len(key) < 16:
        return Judgement(False, WARN if key.startswith("dev-only") else ERROR,
                         "AEGIS_PII_KEY is " + ("a development key" if key.startswith("dev-only") else
                                                "missing or shorter than 16 characters"),
                         "set a long random secret and keep it (changing it changes every hash)")
    return _ok("AEGIS_PII_KEY is a real secret")


def database_passwords(env: Mapping[str, str]) -> Judgement:
    weak = []
    for variable in DATABASE_URLS:
        url = env.get(variable, "")
        if not url.startswith(("postgresql://", "postgres://")):
            continue
        password = urlsplit(url).password
        if not password or password.lower() in DEFAULT_PASSWORDS:
            weak.append(f"{variable}={redact(url)} ({'no password' if not password else 'a default password'})")
    dagster = env.get("DAGSTER_PG_PASSWORD")
    if dagster is not None and (not dagster or dagster.lower() in DEFAULT_PASSWORDS):
        weak.append("DAGSTER_PG_PASSWORD (" + ("empty" if not dagster else "a default password") + ")")
    if weak:
        return Judgement(False, WARN, "database logins without a real password: " + "; ".join(weak),
                         "give each login a long random password (and require it: no trust auth off loopback)")
    return _ok("every database URL carries a non-default password (or the stack is embedded)")


def _loopback(host: str | None) -> bool:
    if host in (None, "", "localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def s3_over_https(env: Mapping[str, str]) -> Judgement:
    endpoint = env.get("AWS_ENDPOINT_URL", "")
    if env.get("AEGIS_LAKE_URL", "").startswith("s3://") and endpoint.startswith("http://"):
        host = urlsplit(endpoint).hostname
        if not _loopback(host):
            return Judgement(False, ERROR, f"the lake's S3 endpoint {redact(endpoint)} is plain HTTP beyond loopback: "
                             "data and credentials travel unencrypted", "use https:// for AWS_ENDPOINT_URL")
    return _ok("S3 traffic is HTTPS (or stays on loopback, or the lake is local)")


def bi_role_read_only(privileges: Mapping[str, object] | None) -> Judgement:
    """`privileges`: what the warehouse says the BI role may do (None: not a PostgreSQL warehouse)."""
    if privileges is None:
        return _ok("the warehouse is DuckDB (a file): no BI role to judge")
    if not privileges.get("exists"):
        return Judgement(False, WARN, f"the BI role {privileges['role']} does not exist",
                         "materialise security/warehouse_access to create it read-only")
    powers = [name for name in ("write", "create", "temporary", "bypassrls", "superuser", "other_schemas")
              if privileges.get(name)]
    if powers:
        return Judgement(False, ERROR, f"the BI role {privileges['role']} can do more than read serving: "
                         f"{', '.join(powers)}", "materialise security/warehouse_access (it revokes them)")
    return _ok(f"the BI role {privileges['role']} can only read serving")


def distinctive(value: str) -> bool:
    """A personal value specific enough to mean something when it turns up elsewhere: at least 8 characters, and
    at least 10 digits when it is only digits and separators (a phone or a CPF, not a count like "123")."""
    text = value.strip()
    if len(text) < 8:
        return False
    digits = re.sub(r"[\s.+/()-]", "", text)
    return len(digits) >= 10 if digits.isdigit() else True


def raw_pii_downstream(raw_values: set[str], places: Iterable[tuple[str, pa.Table]]) -> Judgement:
    """Raw personal values (a sample from bronze) found in any string column of the tables downstream. Only
    distinctive values count: a short or numeric value ("123", a defect's placeholder) equal to some count
    elsewhere is a coincidence, not a leak."""
    raw_values = {v for v in raw_values if distinctive(v)}
    found = []
    for where, table in places:
        for name, column in zip(table.column_names, table.columns, strict=True):
            if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
                if raw_values & set(column.to_pylist()):
                    found.append(f"{where}.{name}")
    if found:
        return Judgement(False, ERROR, f"raw personal data downstream of bronze in: {', '.join(found)}",
                         "mask it in silver (tables.py: hashed_pii / name_pii) and rebuild the days")
    return _ok(f"no raw value of {len(raw_values)} sampled personal values found downstream of bronze")


def environment() -> dict[str, str]:
    return dict(os.environ)
