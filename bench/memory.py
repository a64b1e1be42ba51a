"""Peak RSS of one checkpoint or one restore, measured in a fresh process so nothing else counts.

    python -m bench.memory checkpoint|restore <sqlite source url> <lake url> [checkpoint id]
"""

import resource
import sys

from bench.cases import TABLE
from platform_assets.restoring import restore_one
from resources import CheckpointStore, Lake, SourceDatabase


def main() -> None:
    action, source_url, lake_url = sys.argv[1:4]
    db = SourceDatabase(url=source_url)
    store = CheckpointStore(lake=Lake(url=lake_url), encryption_key="")
    if action == "checkpoint":
        print(store.write(db, TABLE)["id"])
    else:
        restore_one(store, db, TABLE, f"{TABLE}_copy", sys.argv[4])
    print(f"peak_rss_mib={resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.1f}")


if __name__ == "__main__":
    main()
