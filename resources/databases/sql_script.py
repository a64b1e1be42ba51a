"""Splitting a SQL script (as `pg_dump` writes it) into statements, so each runs on its own inside a
transaction we own. Quotes, dollar quotes and comments are respected: a `;` inside them ends nothing."""

from __future__ import annotations

import re

_TOKEN = re.compile(
    r"""(?P<dollar>\$(?:[A-Za-z_][A-Za-z0-9_]*)?\$)   # opening of a dollar-quoted string
      | (?P<estring>[Ee]')                          # E'...' with backslash escapes
      | (?P<string>')                               # '...' with '' escapes
      | (?P<ident>")                                # "..." with "" escapes
      | (?P<line>--[^\n]*)                          # comment to the end of the line
      | (?P<block>/\*)                              # block comment (may nest)
      | (?P<semi>;)""",
    re.VERBOSE,
)
# psql meta-commands and session settings pg_dump adds; our own transaction sets what it needs
_SKIPPED = re.compile(r"^(\\|SET |SELECT pg_catalog\.set_config\()", re.IGNORECASE)


def split_statements(script: str) -> list[str]:
    """The statements of `script`, without comments-only fragments, psql meta-commands and pg_dump's SETs."""
    statements, start, i = [], 0, 0
    script = "\n".join(line for line in script.splitlines() if not line.startswith("\\"))
    while True:
        match = _TOKEN.search(script, i)
        if not match:
            break
        kind, i = match.lastgroup, match.end()
        if kind == "dollar":
            i = _after(script, match.group(), i)
        elif kind in ("string", "ident"):
            i = _after_quoted(script, match.group()[-1], i, backslashes=False)
        elif kind == "estring":
            i = _after_quoted(script, "'", i, backslashes=True)
        elif kind == "block":
            i = _after_block(script, i)
        elif kind == "semi":
            statements.append(script[start:match.start()])
            start = i
    statements.append(script[start:])
    bodies = [_LEADING_COMMENTS.sub("", s).strip() for s in statements]
    return [body for body in bodies if body and not _SKIPPED.match(body)]


_LEADING_COMMENTS = re.compile(r"^(?:\s*--[^\n]*\n?)+")


def _after(script: str, closing: str, i: int) -> int:
    end = script.find(closing, i)
    if end < 0:
        raise ValueError(f"unterminated dollar-quoted string {closing}")
    return end + len(closing)


def _after_quoted(script: str, quote: str, i: int, backslashes: bool) -> int:
    while i < len(script):
        ch = script[i]
        if backslashes and ch == "\\":
            i += 2
            continue
        if ch == quote:
            if script[i + 1:i + 2] == quote:
                i += 2
                continue
            return i + 1
        i += 1
    raise ValueError(f"unterminated {quote}-quoted text in SQL script")


def _after_block(script: str, i: int) -> int:
    depth = 1
    while depth:
        opening, closing = script.find("/*", i), script.find("*/", i)
        if closing < 0:
            raise ValueError("unterminated /* comment in SQL script")
        if 0 <= opening < closing:
            depth, i = depth + 1, opening + 2
        else:
            depth, i = depth - 1, closing + 2
    return i
