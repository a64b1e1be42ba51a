"""Applying a replay plan (resources/capture/replay.py) to a restored PostgreSQL table inside the restore's
transaction, set-based: the log's values are staged as text and cast to each column's type by the server, the
way checkpoints carry them; rows go by key (or, without a key, by whole row and number of copies).

It also gives the database's own fingerprint of the table afterwards (the checkpoints' additive sum of
`hashtextextended(ROW(r.*)::text)`): the loaded checkpoint's (verified against it), less the rows the DELETEs
returned, plus the rows the INSERT returned — the table's own values, without a second pass over it — and what
it must be: the same, but with the rows the change log says follow hashed by the server from the log's own text
(a record's text depends only on its values' text). A value that does not come back exactly as the log holds
it shows as a different fingerprint."""

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
    arrays = {f"c{i}": pa.array([r[i] for r in rows], pa.large_string()) for i in range(width)}
    return _staged(cur, pa.table({**arrays, **(extra or {})}))


def _staged(cur: dbapi.Cursor, table: pa.Table) -> str:
    name = f"aegis_replay_{secrets.token_hex(4)}"
    cur.adbc_ingest(name, table, mode="create", temporary=True)
    return f"pg_temp.{quote_name(name)}"


def _removed(cur: dbapi.Cursor, delete_sql: str) -> tuple[int, int]:
    """Run a DELETE of the target aliased `t`; how many rows it removed and the sum of their row hashes."""
    cur.execute(f"WITH gone AS ({delete_sql} RETURNING t.*) SELECT count(*), "
                f"coalesce(sum({ROW_HASH.format('ROW(gone.*)')}), 0)::text FROM gone")
    count, total = cur.fetchone()
    return int(count), int(total)


ROW_HASH = "hashtextextended({}::text, 0)"  # as resources/databases/postgres_tables.fingerprint sums it
MAX_INT = 1 << 64


def apply(conn: dbapi.Connection, target: TableRef, columns: list[dict], plan: ReplayPlan,
          base_fingerprint: str | None = None) -> dict:
    """Delete what the log removed, insert the final rows; returns how many rows went and came and, given the
    loaded checkpoint's fingerprint, the fingerprint the table must now have (`expected_fingerprint`; None when
    it cannot be told, with `unproven` saying why)."""
    by_name = {c["name"]: c for c in columns}
    cols = [by_name[name] for name in plan.columns]
    names = [quote_name(c["name"]) for c in cols]
    done: dict = {"deleted": 0, "inserted": 0}
    removed = added = inserted = 0
    with conn.cursor() as cur:
        cur.execute("SELECT current_setting('lc_monetary')")
        monetary = cur.fetchone()[0]
        unproven = _unprovable(columns, base_fingerprint, monetary)
        cur.execute("SET LOCAL lc_monetary = 'C'")
        if plan.truncated:
            done["deleted"], removed = _removed(cur, f"DELETE FROM {target.sql} AS t")
        rows = [list(r) for r in plan.rows]
        staged = None
        if plan.arrow_rows is not None:  # replay_arrow: no value comes from the checkpoint
            table = plan.arrow_rows
            staged = _staged(cur, table.append_column("n", pa.array(range(table.num_rows), pa.int64())))
        elif rows:
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
        if plan.key and (plan.delete_keys or plan.arrow_delete_keys is not None):
            keys = (_staged(cur, plan.arrow_delete_keys) if plan.arrow_delete_keys is not None
                    else _stage(cur, [list(k) for k in plan.delete_keys], len(plan.key)))
            match = " AND ".join(f"t.{names[k]} = {_cast(f'd.c{j}', cols[k])}" for j, k in enumerate(plan.key))
            deleted, hashed = _removed(cur, f"DELETE FROM {target.sql} AS t USING {keys} AS d WHERE {match}")
            done["deleted"], removed = done["deleted"] + deleted, removed + hashed
        elif plan.delete_rows:
            wanted = list(plan.delete_rows.items())
            gone = _stage(cur, [list(r) for r, _ in wanted], len(cols),
                          {"id": pa.array(range(len(wanted)), pa.int64()),
                           "copies": pa.array([n for _, n in wanted], pa.int64())})
            same = " AND ".join(f"{_as_text('r.' + names[i])} IS NOT DISTINCT FROM d.c{i}" for i in range(len(cols)))
            deleted, hashed = _removed(
                cur, f"DELETE FROM {target.sql} AS t WHERE ctid IN (SELECT x.ctid FROM (SELECT r.ctid, d.copies, "
                f"row_number() OVER (PARTITION BY d.id) AS nth FROM {target.sql} AS r JOIN {gone} AS d "
                f"ON {same}) AS x WHERE x.nth <= x.copies)")
            done["deleted"], removed = done["deleted"] + deleted, removed + hashed
        if staged is not None:
            as_logged = "ROW(" + ", ".join(f"s.c{i}" for i in range(len(cols))) + ")"
            cur.execute(f"SELECT coalesce(sum({ROW_HASH.format(as_logged)}), 0)::text FROM {staged} AS s")
            added = int(cur.fetchone()[0])
            values = ", ".join(_cast(f"s.c{i}", c) for i, c in enumerate(cols))
            cur.execute(f"WITH put AS (INSERT INTO {target.sql} AS t ({', '.join(names)}) OVERRIDING SYSTEM VALUE "
                        f"SELECT {values} FROM {staged} AS s ORDER BY s.n RETURNING t.*) "
                        f"SELECT count(*), coalesce(sum({ROW_HASH.format('ROW(put.*)')}), 0)::text FROM put")
            count, total = cur.fetchone()
            done["inserted"], inserted = int(count), int(total)
        if unproven is None:  # the table is the verified checkpoint, less what went, plus what came
            base = int(base_fingerprint, 16)
            done["fingerprint"] = f"{(base - removed + inserted) % MAX_INT:016x}"
            done["expected_fingerprint"] = f"{(base - removed + added) % MAX_INT:016x}"
        else:
            done["unproven"] = unproven
        cur.execute("SELECT set_config('lc_monetary', $1, true)", parameters=[monetary])
    return done


def _unprovable(columns: list[dict], base_fingerprint: str | None, monetary: str) -> str | None:
    """Why the table's fingerprint after the replay cannot be told from the log (None: it can); `monetary`: the
    session's lc_monetary."""
    if base_fingerprint is None:
        return "the checkpoint's rows were not all restored as it holds them (erased people)"
    if any(c["travel"] == "generated" for c in columns):
        return "generated columns are not in the change log"
    if any(c["type"] == "money" for c in columns) and monetary.lower() not in ("c", "posix", "c.utf-8", "c.utf8"):
        return f"money is written differently under this session's lc_monetary ({monetary})"
    return None
