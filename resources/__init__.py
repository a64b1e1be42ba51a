"""Everything that touches the outside world, as Dagster resources chosen by URL."""

from resources.checkpoint_store import CheckpointStore
from resources.lake import Lake
from resources.pii import PiiMasker
from resources.recovery_policy import RecoveryPolicy
from resources.source_database import SourceDatabase
from resources.synthetic import SyntheticVolume
from resources.warehouse import Warehouse

__all__ = ["CheckpointStore", "Lake", "PiiMasker", "RecoveryPolicy", "SourceDatabase", "SyntheticVolume", "Warehouse"]
