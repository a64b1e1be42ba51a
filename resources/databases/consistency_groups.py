"""Consistency groups: protected tables that must come back to the same moment.

Tables linked by foreign keys (found in the database's catalogue) and the groups listed in
AEGIS_CONSISTENCY_GROUPS (`customers+sales;ops.orders+ops.items`) are checkpointed from one snapshot under
one checkpoint id, and can be restored together in one transaction from such a checkpoint — so no row is
left referring to a parent that the restore did not bring back. Every protected table is in exactly one
group; most groups hold one table.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from resources.databases.table_refs import TableRef, split_name

GROUPS_VAR = "AEGIS_CONSISTENCY_GROUPS"
Link = tuple[tuple[str, str], tuple[str, str]]  # ((schema, table), (schema, table it references))


class ConsistencyGroupError(ValueError):
    """AEGIS_CONSISTENCY_GROUPS names something that cannot be a group of protected tables."""


@dataclass(frozen=True)
class ConsistencyGroup:
    members: tuple[TableRef, ...]  # in the order the tables are protected
    references: frozenset[tuple[str, str]] = frozenset()  # (table id, id of a table it references)
    retired: bool = False  # a table no longer matched by AEGIS_PROTECTED_TABLES whose checkpoints are still kept

    @property
    def op_id(self) -> str:
        """One identifier for the group's steps: `sales`, `customers_sales`, or a short hashed name."""
        ids = [m.flat_id for m in self.members]
        joined = "_".join(ids)
        if len(ids) == 1 or len(joined) <= 48:
            return joined
        return f"{ids[0][:24]}_and_{len(ids) - 1}_more_{hashlib.sha1(joined.encode()).hexdigest()[:6]}"

    @property
    def label(self) -> str:
        return " + ".join(m.label for m in self.members)

    def partners(self, table_ids: Iterable[str]) -> list[TableRef]:
        """The members not among `table_ids`."""
        chosen = set(table_ids)
        return [m for m in self.members if m.id not in chosen]

    def completion_order(self, refs: Sequence[TableRef]) -> list[TableRef]:
        """`refs` with every table after the tables it references: a restore completes them in this order, so a
        parent's primary key exists when its children's foreign keys are added (cycles: as given)."""
        ordered: list[TableRef] = []
        pending = list(refs)
        while pending:
            ids = {r.id for r in pending}
            ready = [r for r in pending if not any((r.id, other) in self.references for other in ids - {r.id})]
            step = ready[:1] or pending[:1]
            ordered += step
            pending = [r for r in pending if r not in step]
        return ordered


def build_groups(tables: Sequence[TableRef], links: Iterable[Link], spec: str | None,
                 default_schema: str, problems: list[str] | None = None) -> list[ConsistencyGroup]:
    """Every protected table in one group: tables joined by a foreign key, or listed together in `spec`
    (groups separated by `;`, tables by `+`; each must be protected). A group `spec` cannot form raises
    ConsistencyGroupError — or, given a `problems` list, is said there and left out (the code location loads)."""
    by_name = {(t.schema or default_schema, t.name): t for t in tables}
    root = {t: t for t in tables}

    def find(t: TableRef) -> TableRef:
        while root[t] != t:
            root[t] = root[root[t]]
            t = root[t]
        return t

    def join(a: TableRef, b: TableRef) -> None:
        root[find(a)] = find(b)

    def refuse(message: str) -> None:
        if problems is None:
            raise ConsistencyGroupError(message)
        problems.append(f"{message} (this group is ignored)")

    references = set()
    for child, parent in links:
        if child in by_name and parent in by_name:
            join(by_name[child], by_name[parent])
            references.add((by_name[child].id, by_name[parent].id))
    for text in (spec or "").split(";"):
        names = [n.strip() for n in text.split("+") if n.strip()]
        if not names:
            continue
        if len(names) < 2:
            refuse(f"{GROUPS_VAR}: {text.strip()!r} names one table; a group joins two or more protected tables "
                   "with + (groups are separated by ;)")
            continue
        members = []
        for name in names:
            try:
                key = split_name(name, default_schema, GROUPS_VAR)
            except ValueError as exc:
                refuse(str(exc))
                break
            if key not in by_name:
                refuse(f"{GROUPS_VAR} names {name!r}, which is not a protected table (protect it with "
                       "AEGIS_PROTECTED_TABLES first)")
                break
            members.append(by_name[key])
        if len(members) < len(names):
            continue
        for member in members[1:]:
            join(members[0], member)
    groups: dict[TableRef, list[TableRef]] = {}
    for table in tables:
        groups.setdefault(find(table), []).append(table)
    result = []
    for members in groups.values():
        ids = {m.id for m in members}
        result.append(ConsistencyGroup(tuple(members), frozenset(r for r in references if r[0] in ids)))
    return result


def group_of(groups: Sequence[ConsistencyGroup], table_id: str) -> ConsistencyGroup | None:
    return next((g for g in groups if any(m.id == table_id for m in g.members)), None)
