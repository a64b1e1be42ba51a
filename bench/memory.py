"""Peak RSS of one checkpoint or one restore, measured in a fresh process so nothing else counts.
The figure includes the interpreter and its imports (about 165 MiB: dagster, duckdb, pyarrow).

    python -m bench.memory checkpoint|restore <source url> <lake url> <table> [checkpoint id]

A restore goes beside the table, into `<table>_copy`, which it replaces if present from an earlier run.
"""

import re
import sys
from pathlib import Path

from platform_assets.protection.restoring import restore_one
from resources import CheckpointStore, Lake, SourceDatabase


def main() -> None:
    action, source_url, lake_url, table = sys.argv[1:5]
    db = SourceDatabase(url=source_url)
    store = CheckpointStore(lake=Lake(url=lake_url), encryption_key="")
    if action == "checkpoint":
        print(store.write(db, table)["id"])
    else:
        if db.table_exists(f"{table}_copy"):
            db.drop_table(f"{table}_copy")
        restore_one(store, db, table, f"{table}_copy", sys.argv[5])
    print(f"peak_rss_mib={peak_rss_mib():.1f}")


def peak_rss_mib() -> float:
    """VmHWM: the high-water mark of this process's own memory. (getrusage's ru_maxrss would not do:
    Linux carries it across exec, so a child would report its parent's peak.)"""
    return int(re.search(r"VmHWM:\s+(\d+) kB", Path("/proc/self/status").read_text()).group(1)) / 1024


if __name__ == "__main__":
    main()
