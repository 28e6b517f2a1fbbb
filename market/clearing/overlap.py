"""Running the clearing's Python work while HiGHS solves, on the machine's other core.

highspy releases the GIL while ``Highs.run`` works (checked: a Python thread spinning beside a
0.76 s solve kept running throughout, and the solve took 0.82 s). The clearing's own Python and
NumPy work on one component (the tie-break, the prices, the tally) and on the whole book (its hash)
can therefore run while the next component is being solved, instead of after it. Each component is
still solved, and its results consumed, in the order of the components, so the result is the same
as without the overlap, to the bit.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")

_POLL_S = 0.1


@dataclass
class _End:
    error: BaseException | None = None


def ahead(items: Iterator[T], depth: int = 1, name: str = "clearing-ahead") -> Iterator[T]:
    """``items``, produced by a thread of their own up to ``depth`` items ahead of the consumer.

    An exception raised while producing is raised here, at the item where it happened. If the
    consumer stops early (an exception, or ``close``), the producer is told to stop and is joined
    once it has finished the item in hand.
    """
    handoff: queue.Queue[T | _End] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: T | _End) -> bool:
        while not stop.is_set():
            try:
                handoff.put(item, timeout=_POLL_S)
            except queue.Full:
                continue
            return True
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put(item):
                    return
            put(_End())  # before the clean-up below, so the consumer is never left waiting
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, which raises it
            put(_End(exc))
        finally:
            # A generator stopped early runs its own clean-up now, in this thread (a nested ``ahead``
            # stops its producer in turn).
            close = getattr(items, "close", None)
            if close is not None:
                close()

    thread = threading.Thread(target=produce, name=name, daemon=True)
    thread.start()
    try:
        while True:
            item = handoff.get()
            if isinstance(item, _End):
                if item.error is not None:
                    raise item.error
                return
            yield item
    finally:
        stop.set()
        thread.join()
