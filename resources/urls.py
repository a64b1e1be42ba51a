"""Parsing the one-URL-per-role configuration, with errors that name the environment variable."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from urllib.parse import urlsplit


class ConfigurationError(ValueError):
    """A URL or secret that cannot be used; the message names the variable to fix."""


@dataclass(frozen=True)
class ParsedUrl:
    scheme: str
    location: str  # a file path for sqlite/duckdb/file, the bucket/prefix for s3, the DSN for postgresql
    display: str  # the URL with any password replaced, safe for logs and metadata


def redact(url: str) -> str:
    """The URL with its password (if any) replaced by ***."""
    return re.sub(r"(://[^:/@]+:)[^@/]*@", r"\1***@", url)


def parse_url(url: str, variable: str, schemes: dict[str, str]) -> ParsedUrl:
    """Split a role URL; `schemes` maps each accepted scheme to an example shown in errors."""
    if not url or not isinstance(url, str):
        raise ConfigurationError(f"{variable} is empty; expected one of: {', '.join(schemes.values())}")
    display = redact(url)
    scheme, sep, rest = url.partition("://")
    scheme = scheme.lower()
    if not sep or scheme not in schemes:
        raise ConfigurationError(
            f"{variable}={display}: unsupported URL scheme {scheme!r}; expected one of: "
            + ", ".join(schemes.values())
        )
    if scheme in ("sqlite", "duckdb"):
        # sqlite:///relative/path.db and sqlite:////absolute/path.db, as SQLAlchemy spells them
        if not rest.startswith("/") or len(rest) < 2:
            raise ConfigurationError(f"{variable}={display}: expected {schemes[scheme]}")
        location = rest[1:]
    elif scheme == "file":
        location = rest  # file://data/lake (relative) or file:///srv/lake (absolute)
        if not location:
            raise ConfigurationError(f"{variable}={display}: expected {schemes[scheme]}")
    elif scheme == "s3":
        location = rest.strip("/")
        if not location or not re.match(r"^[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9](/.*)?$", location):
            raise ConfigurationError(f"{variable}={display}: expected {schemes[scheme]} with a valid bucket")
    else:  # postgresql
        parts = urlsplit(url)
        if not parts.hostname and not parts.path.strip("/"):
            raise ConfigurationError(f"{variable}={display}: expected {schemes[scheme]}")
        location = url if scheme == "postgresql" else "postgresql" + url[len(scheme):]
    return ParsedUrl(scheme=scheme, location=location, display=display)


def absolute(path: str) -> str:
    return os.path.abspath(os.path.expanduser(path))
