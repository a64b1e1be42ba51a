"""The lake's settings from the environment, and the one safety check Delta needs from an object store.

- AEGIS_LAKE_RETENTION_HOURS (default 168): how far back time travel is promised; vacuum never goes below it.
- AEGIS_LAKE_SINGLE_WRITER (default false): true for an object store that ignores conditional writes. Delta
  commits are then not arbitrated by the store, so each lake writer runs in the Dagster pool
  `lake_<layer>_<table>` (limit 1 from `concurrency.pools.default_limit` in dagster.yaml).
"""

from __future__ import annotations

import functools
import os
import uuid

from resources.identifiers import check_identifier, check_lake_layer
from resources.urls import ConfigurationError

RETENTION_VAR, SINGLE_WRITER_VAR = "AEGIS_LAKE_RETENTION_HOURS", "AEGIS_LAKE_SINGLE_WRITER"
DEFAULT_RETENTION_HOURS = 7 * 24


def single_writer() -> bool:
    return os.environ.get(SINGLE_WRITER_VAR, "").strip().lower() in ("1", "true", "yes")


class UnsafeObjectStoreError(RuntimeError):
    """The object store does not honour conditional writes, and writers are not declared serialised."""


def retention_from_env() -> int:
    """AEGIS_LAKE_RETENTION_HOURS (default 168 = 7 days): how far back time travel is promised."""
    text = os.environ.get(RETENTION_VAR, "").strip()
    if not text:
        return DEFAULT_RETENTION_HOURS
    if not text.isdigit():
        raise ConfigurationError(f"{RETENTION_VAR}={text!r}: expected a whole number of hours (e.g. 168)")
    return int(text)


def writer_pool(layer: str, table: str) -> str | None:
    """The Dagster pool a writer of `<layer>/<table>` runs in when writers must be serialised (limit 1 per pool
    in the instance's dagster.yaml), else None: Delta's own commit protocol arbitrates."""
    if not single_writer():
        return None
    return "lake_" + "_".join([*check_lake_layer(layer), check_identifier(table, "table name")])



def check_conditional_writes(variable: str, display: str, location: str, endpoint_url: str | None) -> None:
    """Once per process and bucket: an object store that ignores If-None-Match would let two Delta commits
    overwrite each other; refuse to write unless writers are declared serialised."""
    if single_writer():
        return
    endpoint = endpoint_url or os.environ.get("AWS_ENDPOINT_URL") or "AWS S3"
    if not _honours_conditional_writes(location, endpoint_url):
        raise UnsafeObjectStoreError(
            f"{variable}={display}: the object store at {endpoint} accepted a second PUT with If-None-Match: *, "
            f"so it cannot arbitrate concurrent Delta commits. Set {SINGLE_WRITER_VAR}=true to serialise the "
            "writers of each table through Dagster pools (limit 1 in dagster.yaml), or use a store with "
            "conditional writes.")


@functools.cache
def _honours_conditional_writes(location: str, endpoint_url: str | None) -> bool:
    import boto3  # only for this probe: pyarrow's S3 client cannot send If-None-Match

    bucket, _, prefix = location.partition("/")
    client = boto3.client("s3", endpoint_url=endpoint_url or os.environ.get("AWS_ENDPOINT_URL"),
                          region_name=os.environ.get("AWS_REGION", "us-east-1"))
    key = "/".join(p for p in (prefix, "_aegis", f"conditional-write-probe-{uuid.uuid4().hex}") if p)
    client.put_object(Bucket=bucket, Key=key, Body=b"1", IfNoneMatch="*")
    try:
        client.put_object(Bucket=bucket, Key=key, Body=b"2", IfNoneMatch="*")
        return False
    except client.exceptions.ClientError as exc:
        return exc.response.get("Error", {}).get("Code") in ("PreconditionFailed", "ConditionalRequestConflict")
    finally:
        client.delete_object(Bucket=bucket, Key=key)

