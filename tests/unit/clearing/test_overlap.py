"""``ahead``: components produced by a thread of their own, consumed in order, errors and early
stops handed over cleanly."""

from __future__ import annotations

import dataclasses
import itertools
import threading
from collections.abc import Iterator

import pytest

from benchmarks.clearing_books import SIZES, columns, order_book
from market.clearing import engine
from market.clearing.overlap import ahead

WAIT_S = 10.0


def test_items_arrive_in_order_and_all() -> None:
    assert list(ahead(iter(range(1_000)))) == list(range(1_000))
    assert list(ahead(iter([]))) == []


def test_the_producer_works_while_the_consumer_holds_an_item() -> None:
    """The producer makes item 1 while the consumer is still on item 0: the consumer waits for a
    signal that only the producer's work on item 1 gives (it would wait in vain without a thread)."""
    second_started = threading.Event()

    def items() -> Iterator[int]:
        yield 0
        second_started.set()
        yield 1

    stream = ahead(items())
    assert next(stream) == 0
    assert second_started.wait(WAIT_S)
    assert list(stream) == [1]


def test_at_most_depth_items_wait() -> None:
    produced: list[int] = []

    def items() -> Iterator[int]:
        for i in itertools.count():
            produced.append(i)
            yield i

    stream = ahead(items(), depth=2)
    assert next(stream) == 0
    # Item 0 is consumed, two wait in the queue, and the producer holds a fourth it cannot hand over.
    for _ in range(100):
        if len(produced) >= 4:
            break
        threading.Event().wait(0.01)
    assert len(produced) == 4
    stream.close()


def test_an_error_is_raised_where_it_happened() -> None:
    def items() -> Iterator[int]:
        yield 0
        yield 1
        raise ValueError("component 2 is infeasible")

    stream = ahead(items())
    assert [next(stream), next(stream)] == [0, 1]
    with pytest.raises(ValueError, match="component 2 is infeasible"):
        next(stream)


def test_stopping_early_stops_the_producer() -> None:
    before = threading.active_count()
    for item in ahead(itertools.count(), name="test-ahead"):
        if item == 3:
            break
    # Leaving the loop drops the generator, whose closing stops and joins the producer.
    assert not any(t.name == "test-ahead" for t in threading.enumerate())
    assert threading.active_count() == before


def test_an_error_in_the_consumer_stops_the_producer() -> None:
    def consume() -> None:
        for item in ahead(itertools.count(), name="test-ahead-2"):
            if item == 5:
                raise RuntimeError("consumer failed")

    with pytest.raises(RuntimeError, match="consumer failed"):
        consume()
    assert not any(t.name == "test-ahead-2" for t in threading.enumerate())


def test_a_nested_stream_stops_with_its_consumer() -> None:
    """The clearing nests two streams (compiling ahead of solving ahead of pricing): stopping the
    outer one stops the inner one's thread too."""

    def doubled() -> Iterator[int]:
        for item in ahead(itertools.count(), name="test-inner"):
            yield 2 * item

    for item in ahead(doubled(), name="test-outer"):
        if item == 10:
            break
    names = {t.name for t in threading.enumerate()}
    assert "test-inner" not in names
    assert "test-outer" not in names


@pytest.mark.parametrize("size", ["small", "storage"])
def test_clearing_in_threads_gives_the_same_result(size: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same book cleared with its steps in threads and one after the other: the same result, to
    the hashes (a 600-offer slice of the benchmark's storage day and 2,000 offers of its small book)."""
    offers = {"small": 2_000, "storage": 600}[size]
    book = order_book(columns(dataclasses.replace(SIZES[size], offers=offers)))
    monkeypatch.setattr(engine, "OVERLAP_MIN_ENTRIES", 10**12)
    alone = engine.clear(book)
    monkeypatch.setattr(engine, "OVERLAP_MIN_ENTRIES", 0)
    threaded = engine.clear(book)
    assert threaded == alone
    assert (threaded.input_hash, threaded.result_hash) == (alone.input_hash, alone.result_hash)
    assert threaded.awards
