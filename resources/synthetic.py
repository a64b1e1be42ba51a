"""How much synthetic operational data the stand-in source systems produce."""

from __future__ import annotations

import dagster as dg
from pydantic import Field


class SyntheticVolume(dg.ConfigurableResource):
    """Volume and dirtiness of the generated data; the seed makes every day reproducible."""

    rows_per_day: int = Field(default=10_000, description="rows per table per day (customers: a quarter)")
    dirty_share: float = Field(default=0.02, description="share of rows with a defect")
    seed: int = 7
