"""When the platform may put a checkpoint in the place of a table that is still there, and for how long the
table it replaced is kept. One policy, read from the environment once, shared by the watch sensor and the
recovery assets so that both judge a table the same way."""

from __future__ import annotations

import os
from typing import ClassVar

import dagster as dg

from resources.urls import ConfigurationError

_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off", "")


class RecoveryPolicy(dg.ConfigurableResource):
    """How `source_table_watch` and `recovery/<table>` treat a table that is present."""

    watch_interval_seconds: int = 5  # how often the watch sensor looks
    shrink_alert_share: float = 0.5  # present but below this share of its newest checkpoint's rows: shrunk
    restore_on_shrink: bool = False  # the sensor restores a shrunk table by itself (else it only alerts)
    keep_replaced_days: float = 7.0  # a table a restore replaced is kept aside this long, then retention drops it

    VARIABLES: ClassVar[dict[str, str]] = {
        "watch_interval_seconds": "AEGIS_WATCH_INTERVAL_SECONDS", "shrink_alert_share": "AEGIS_SHRINK_ALERT_SHARE",
        "restore_on_shrink": "AEGIS_RESTORE_ON_SHRINK", "keep_replaced_days": "AEGIS_KEEP_REPLACED_DAYS",
    }

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> RecoveryPolicy:
        """The policy from AEGIS_* variables; unset ones keep their defaults, bad ones fail naming the variable."""
        environ = os.environ if environ is None else environ
        values: dict = {}
        for field, variable in cls.VARIABLES.items():
            text = environ.get(variable)
            if text is None:
                continue
            values[field] = _parse(field, variable, text.strip())
        return cls(**values)

    def is_shrunk(self, rows_now: int, checkpoint_rows: int) -> bool:
        """A present table is shrunk when it holds less than `shrink_alert_share` of its newest checkpoint."""
        return checkpoint_rows > 0 and rows_now < self.shrink_alert_share * checkpoint_rows


def _parse(field: str, variable: str, text: str) -> int | float | bool:
    if field == "restore_on_shrink":
        if text.lower() not in _TRUE + _FALSE:
            raise ConfigurationError(f"{variable}={text!r}: expected true or false")
        return text.lower() in _TRUE
    try:
        value = int(text) if field == "watch_interval_seconds" else float(text)
    except ValueError:
        raise ConfigurationError(f"{variable}={text!r}: expected a number") from None
    if field == "shrink_alert_share" and not 0 <= value <= 1:
        raise ConfigurationError(f"{variable}={text!r}: expected a share between 0 and 1 (e.g. 0.5)")
    if field != "shrink_alert_share" and value <= 0:
        raise ConfigurationError(f"{variable}={text!r}: expected a positive number")
    return value
