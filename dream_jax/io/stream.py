"""Host work beside device work: a bounded read-ahead thread, grouping by
size, and a writer thread.

Decoding the next images and encoding the last ones as PNG run on their own
threads while the main thread waits on the device (jax and Pillow release the
GIL). Every queue is bounded, so memory holds a fixed number of images however
long the stream is.
"""
from __future__ import annotations

import queue
import threading
from collections import OrderedDict
from typing import Callable, Iterable, Iterator

_DONE = object()


class Prefetch:
    """Iterate `items` on a background thread, at most `size` ahead. An
    exception in the producer is raised by the consumer; `close` stops it."""

    def __init__(self, items: Iterable, size: int):
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, size))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._produce, args=(items,), daemon=True,
                                        name="dream_jax-read")
        self._thread.start()

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _produce(self, items: Iterable) -> None:
        try:
            for item in items:
                if not self._put(item):
                    return
        except BaseException as e:  # noqa: BLE001 -- handed to the consumer
            self._put((_DONE, e))
            return
        self._put((_DONE, None))

    def __iter__(self) -> Iterator:
        while True:
            item = self._queue.get()
            if isinstance(item, tuple) and len(item) == 2 and item[0] is _DONE:
                if item[1] is not None:
                    raise item[1]
                return
            yield item

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def group_by_shape(items: Iterable, shape_of: Callable, batch_size: int,
                   max_pending: int) -> Iterator[list]:
    """Same-shape lists of at most `batch_size` items. A group is let go when
    full, when more than `max_pending` items wait (the largest group, so
    memory stays bounded when sizes vary), or at the end."""
    groups: OrderedDict = OrderedDict()
    pending = 0
    for item in items:
        group = groups.setdefault(shape_of(item), [])
        group.append(item)
        pending += 1
        if len(group) == batch_size:
            pending -= len(groups.pop(shape_of(item)))
            yield group
        elif pending > max_pending:
            largest = max(groups, key=lambda k: len(groups[k]))
            pending -= len(groups[largest])
            yield groups.pop(largest)
    yield from groups.values()


class Writer:
    """Run `write(item)` for each submitted item on a background thread, at most
    `size` waiting. The first exception stops it; `error` holds it."""

    def __init__(self, write: Callable, size: int):
        self._write = write
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, size))
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True, name="dream_jax-write")
        self._thread.start()

    def _run(self) -> None:
        while (item := self._queue.get()) is not _DONE:
            if self.error is None:
                try:
                    self._write(item)
                except BaseException as e:  # noqa: BLE001 -- raised in the main thread
                    self.error = e

    def submit(self, item) -> None:
        if self.error is not None:
            raise self.error
        self._queue.put(item)

    def close(self) -> None:
        """Write what was submitted (unless a write failed) and stop."""
        self._queue.put(_DONE)
        self._thread.join()
