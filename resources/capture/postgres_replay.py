"""Applying a replay plan (resources/capture/replay.py) to a restored PostgreSQL table inside the restore's
transaction, set-based: the log's values are staged as text and cast to each column's type by the server, the
way checkpoints carry them; rows go by key (or, without a key, by whole row and number of copies)."""

from __future__ import annotations

import secrets

import adbc_driver_manager.dbapi as dbapi
import pyarrow as pa

from resources.capture.replay import FROM_BASE, ReplayError, ReplayPlan
from resources.databases.table_refs import TableRef, quote_name


def _cast(value_sql: str, column: dict) -> str:
    return f"{value_sql}::{column['type']}"  # money arrives as money text (lc_monetary=C both ways)


def _as_text(value_sql: str) -> str:
    return f"{value_sql}::text"


def _stage(cur: dbapi.Cursor, rows: list[list], width: int, extra: dict[str, pa.Array] | None = None) -> str:
    name = f"aegis_replay_{secrets.token_hex(4)}"
    arrays = {f"c{i}": pa.array([r[i] for r in rows], pa.large_string()) for i in range(width)}
    cur.adbc_ingest(name, pa.table({**arrays, **(extra or {})}), mode="create", temporary=True)
    return f"pg_temp.{quote_name(name)}"


def apply(conn: dbapi.Connection, target: TableRef, columns: list[dict], plan: ReplayPlan) -> dict[str, int]:
    """Delete what the log removed, insert the final rows; returns how many rows went and came."""
    by_name = {c["name"]: c for c in columns}
    cols = [by_name[name] for name in plan.columns]
    names = [quote_name(c["name"]) for c in cols]
    done = {"deleted": 0, "inserted": 0}
    with conn.cursor() as cur:
        cur.execute("SET LOCAL lc_monetary = 'C'")
        if plan.truncated:
            cur.execute(f"DELETE FROM {target.sql}")
            done["deleted"] = cur.rowcount
        rows = [list(r) for r in plan.rows]
        staged = None
        if rows:
            base_from = [r for r, o in zip(rows, plan.origins, strict=True) if o is not None]
            origins = [list(o) if o is not None else [None] * len(plan.key) for o in plan.origins]
            extra = {"n": pa.array(range(len(rows)), pa.int64()),
                     "fb": pa.array([[i for i, v in enumerate(r) if v == FROM_BASE] or None for r in rows],
                                    pa.list_(pa.int32())),
                     **{f"o{j}": pa.array([o[j] for o in origins], pa.large_string()) for j in range(len(plan.key))}}
            staged = _stage(cur, [[None if v == FROM_BASE else v for v in r] for r in rows], len(cols), extra)
            if base_from:  # values an UPDATE left untouched: the checkpoint's row (with its original key) has them
                sets = ", ".join(f"c{i} = CASE WHEN {i} = ANY(s.fb) THEN {_as_text('t.' + names[i])} ELSE s.c{i} END"
                                 for i in range(len(cols)))
                match = " AND ".join(f"t.{names[k]} = {_cast(f's.o{j}', cols[k])}" for j, k in enumerate(plan.key))
                cur.execute(f"UPDATE {staged} AS s SET {sets} FROM {target.sql} AS t "
                            f"WHERE s.fb IS NOT NULL AND {match}")
                if cur.rowcount != len(base_from):
                    raise ReplayError(f"{target.label}: {len(base_from) - cur.rowcount} updated row(s) in the change "
                                      "log kept values of a row the checkpoint does not hold: the log and the "
                                      "checkpoint do not meet")
        if plan.key and plan.delete_keys:
            keys = _stage(cur, [list(k) for k in plan.delete_keys], len(plan.key))
            match = " AND ".join(f"t.{names[k]} = {_cast(f'd.c{j}', cols[k])}" for j, k in enumerate(plan.key))
            cur.execute(f"DELETE FROM {target.sql} AS t USING {keys} AS d WHERE {match}")
            done["deleted"] += cur.rowcount
        elif plan.delete_rows:
            wanted = list(plan.delete_rows.items())
            gone = _stage(cur, [list(r) for r, _ in wanted], len(cols),
                          {"id": pa.array(range(len(wanted)), pa.int64()),
                           "copies": pa.array([n for _, n in wanted], pa.int64())})
            same = " AND ".join(f"{_as_text('t.' + names[i])} IS NOT DISTINCT FROM d.c{i}" for i in range(len(cols)))
            cur.execute(f"DELETE FROM {target.sql} WHERE ctid IN (SELECT x.ctid FROM (SELECT t.ctid, d.copies, "
                        f"row_number() OVER (PARTITION BY d.id) AS nth FROM {target.sql} AS t JOIN {gone} AS d "
                        f"ON {same}) AS x WHERE x.nth <= x.copies)")
            done["deleted"] += cur.rowcount
        if staged is not None:
            values = ", ".join(_cast(f"s.c{i}", c) for i, c in enumerate(cols))
            cur.execute(f"INSERT INTO {target.sql} ({', '.join(names)}) OVERRIDING SYSTEM VALUE "
                        f"SELECT {values} FROM {staged} AS s ORDER BY s.n")
            done["inserted"] = cur.rowcount
    return done
