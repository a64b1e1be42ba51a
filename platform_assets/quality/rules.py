"""A data rule, declared once, and everything derived from it: the SQL that quarantines the rows breaking it
(cleansing.py), the Great Expectations expectation that judges a partition by it (expectations.py), and the
line that documents it (the silver asset's description in the UI).

A rule that quarantines (`quarantine=True`, the default) is tolerated in a silver suite up to TOLERANCE of the
rows; a warning-only rule (`warn=share`) quarantines nothing and only WARNs below that share of good rows.
A derived measure (e.g. a total's distance from quantity x price) is one SQL expression, computed the same way
for the quarantine and for the suite.
"""

from __future__ import annotations

from dataclasses import dataclass, field

ERROR, WARN = "ERROR", "WARN"


@dataclass(frozen=True)
class Expect:
    """One expectation: a Great Expectations class name, its arguments, and how much a failure matters."""

    kind: str
    kwargs: dict
    severity: str = ERROR

    @property
    def label(self) -> str:
        target = self.kwargs.get("column") or self.kwargs.get("column_list") or (
            f"{self.kwargs['column_A']} vs {self.kwargs['column_B']}" if "column_A" in self.kwargs else "table")
        return f"{self.kind}({target})"


@dataclass(frozen=True)
class Rule:
    reason: str  # the quarantine reason; also how the docs name the rule
    bad_sql: str  # true for a row that breaks it (over the typed columns and `derived`)
    expect: Expect  # the same rule as an expectation (its `mostly` is set by the suite, or by `warn`)
    derived: dict[str, str] = field(default_factory=dict)  # measure name -> SQL expression over typed columns
    warn: float | None = None  # warning only: the share of rows that must meet it; nothing is quarantined

    @property
    def quarantines(self) -> bool:
        return self.warn is None


def _literal(value) -> str:
    return "'" + str(value).replace("'", "''") + "'" if isinstance(value, str) else repr(value)


def between(column: str, low=None, high=None, *, reason: str, warn: float | None = None) -> Rule:
    bad = " OR ".join([*([f"{column} < {low!r}"] if low is not None else []),
                       *([f"{column} > {high!r}"] if high is not None else [])])
    kwargs = {"column": column, **({"min_value": low} if low is not None else {}),
              **({"max_value": high} if high is not None else {})}
    return Rule(reason, bad, Expect("ExpectColumnValuesToBeBetween", kwargs, WARN if warn else ERROR), warn=warn)


def one_of(column: str, values, *, reason: str, warn: float | None = None) -> Rule:
    listed = ", ".join(_literal(v) for v in sorted(values))
    return Rule(reason, f"{column} NOT IN ({listed})", Expect(
        "ExpectColumnValuesToBeInSet", {"column": column, "value_set": sorted(values)}, WARN if warn else ERROR),
        warn=warn)


def matches(column: str, pattern: str, *, reason: str) -> Rule:
    """`pattern` must match the whole value (nulls are the business of `required`)."""
    return Rule(reason, f"NOT regexp_full_match({column}, {_literal(pattern)})",
                Expect("ExpectColumnValuesToMatchRegex", {"column": column, "regex": f"^{pattern}$"}))


def at_least(column_a: str, column_b: str, *, reason: str, warn: float | None = None) -> Rule:
    """`column_a` >= `column_b` on every row."""
    return Rule(reason, f"{column_a} < {column_b}", Expect(
        "ExpectColumnPairValuesAToBeGreaterThanB", {"column_A": column_a, "column_B": column_b, "or_equal": True},
        WARN if warn else ERROR), warn=warn)


def measured(name: str, expression: str, high: float, *, reason: str) -> Rule:
    """A derived measure (`expression`, NULL where it does not apply) that must not exceed `high`."""
    rule = between(name, None, high, reason=reason)
    return Rule(reason, f"({expression}) > {high!r}", rule.expect, derived={name: expression})


def rules_table(rules: tuple[Rule, ...]) -> str:
    """The rules as the markdown table the UI shows in the silver asset's description."""
    lines = ["| rule | a row breaks it when | then | expectation |", "|---|---|---|---|"]
    for rule in rules:
        then = "quarantined" if rule.quarantines else f"WARN below {rule.warn:.1%} of rows"
        lines.append(f"| {rule.reason} | {rule.bad_sql.replace('|', '¦')} | {then} | {rule.expect.label} |")
    return "\n".join(lines)
