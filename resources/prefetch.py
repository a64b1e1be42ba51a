"""Read ahead on a background thread so fetching the next batch overlaps with work on this one.

ADBC fetches, Arrow concatenation and Parquet encoding all release the GIL, so on two cores reading
the source and writing the checkpoint run side by side. At most `depth` items wait in memory.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import TypeVar

T = TypeVar("T")
_DONE = object()


@contextmanager
def prefetched(items: Iterable[T], depth: int = 2) -> Iterator[Iterator[T]]:
    """Yield an iterator over `items` that a worker thread fills up to `depth` ahead.

    An error raised while reading is raised again in the consumer; leaving the block early stops
    the worker and waits for it, so the source (e.g. a connection) can be closed right after."""
    box: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(entry: tuple[bool, object]) -> bool:
        while not stop.is_set():
            try:
                box.put(entry, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def pump() -> None:
        try:
            for item in items:
                if not put((True, item)):
                    return
            put((True, _DONE))
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, raised there
            put((False, exc))

    def consume() -> Iterator[T]:
        while True:
            ok, item = box.get()
            if not ok:
                raise item
            if item is _DONE:
                return
            yield item

    worker = threading.Thread(target=pump, name="aegis-prefetch", daemon=True)
    worker.start()
    try:
        yield consume()
    finally:
        stop.set()
        worker.join()
