"""Everything that touches the outside world, as Dagster resources chosen by URL: `databases/`, `lake/`,
`checkpoints/`, `http/`, and the shared modules beside them (URLs, identifiers, fingerprints, the people in
the data, settings). Nothing here imports platform_assets or sensors; this file only re-exports the resources."""

from resources.checkpoints.store import CheckpointStore
from resources.databases.source_database import SourceDatabase
from resources.databases.warehouse import Warehouse
from resources.lake.lake import Lake
from resources.pii import PiiMasker
from resources.recovery_policy import RecoveryPolicy
from resources.synthetic import SyntheticVolume

__all__ = ["CheckpointStore", "Lake", "PiiMasker", "RecoveryPolicy", "SourceDatabase", "SyntheticVolume", "Warehouse"]
