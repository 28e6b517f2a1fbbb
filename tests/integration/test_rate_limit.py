"""Per-participant rate limiting: in force through the API with the counters in the real Redis, keyed
by the authenticated participant (never a client header); plus the pure fixed-window rules and the
in-memory limiter of the embedded mode."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import pytest
import redis
from hypothesis import given, settings
from hypothesis import strategies as st
from litestar import Litestar
from litestar.testing import TestClient
from pydantic import ValidationError
from sqlalchemy.orm import Session

from market.auth.principal import Scope
from market.auth.service import issue_key
from market.core.app import create_app
from market.core.config import ApiSettings, DatabaseSettings, JobSettings, SecuritySettings, Settings
from market.core.ratelimit import MemoryLimiter, RedisLimiter, decide, make_limiter
from market.participants.models import Role
from tests import factories
from tests.factories import Actor

REDIS_URL = "redis://127.0.0.1:6379/0"
LIMIT = 5
ME = "/api/v1/me"


@pytest.fixture
def prefix() -> Iterator[str]:
    """A key prefix of this test alone; its keys are deleted afterwards."""
    name = f"flextest:ratelimit:{uuid.uuid4().hex}"
    yield name
    store = redis.Redis.from_url(REDIS_URL)
    keys = list(store.scan_iter(f"{name}:*"))
    if keys:
        store.delete(*keys)
    store.close()


@pytest.fixture
def store() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(REDIS_URL, decode_responses=True)
    yield client
    client.close()


@pytest.fixture
def limited(settings: Settings, prefix: str, _clean_tables: None) -> Iterator[TestClient[Litestar]]:
    """The API with a limit of LIMIT requests per minute, counted in Redis under ``prefix``."""
    limited_settings = settings.model_copy(
        update={
            "api": ApiSettings(
                rate_limit_per_minute=LIMIT, rate_limit_redis_url=REDIS_URL, rate_limit_key_prefix=prefix
            )
        }
    )
    app = create_app(limited_settings)
    with TestClient(app=app) as client:
        yield client
    app.state.engine.dispose()


def _spend(client: TestClient[Litestar], who: Actor, count: int, **headers: str) -> list[int]:
    return [client.get(ME, headers={**who.headers, **headers}).status_code for _ in range(count)]


def test_the_request_after_the_limit_is_429_with_retry_after(
    limited: TestClient[Litestar], db: Session, prefix: str, store: redis.Redis
) -> None:
    who = factories.actor(db, Role.HOUSEHOLD)
    assert _spend(limited, who, LIMIT) == [200] * LIMIT
    refused = limited.get(ME, headers={**who.headers, "X-Request-ID": "over"})
    assert refused.status_code == 429
    assert refused.headers["content-type"].startswith("application/problem+json")
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    assert refused.headers["X-Request-ID"] == "over"
    body = refused.json()
    assert body["status"] == 429
    assert body["title"] == "Too many requests"
    assert f"at most {LIMIT} requests per minute per participant" in body["detail"]
    assert f"retry after {refused.headers['Retry-After']} s" in body["detail"]
    # The counter is in Redis, under the participant's id, with the rest of its window as TTL.
    key = f"{prefix}:{who.id}"
    assert store.get(key) == str(LIMIT + 1)
    assert 0 < store.pttl(key) <= 60_000


def test_another_participant_is_unaffected(limited: TestClient[Litestar], db: Session, prefix: str) -> None:
    first = factories.actor(db, Role.HOUSEHOLD)
    second = factories.actor(db, Role.AGGREGATOR)
    assert _spend(limited, first, LIMIT + 2) == [200] * LIMIT + [429, 429]
    assert _spend(limited, second, LIMIT) == [200] * LIMIT
    assert _spend(limited, second, 1) == [429]


def test_two_keys_of_one_participant_share_its_budget(limited: TestClient[Litestar], db: Session) -> None:
    who = factories.actor(db, Role.HOUSEHOLD)
    _, token = issue_key(db, who.participant, "second", [Scope.TRADE], factories.PEPPER)
    db.commit()
    assert _spend(limited, who, 3) == [200] * 3
    second_key = [limited.get(ME, headers={"Authorization": f"Bearer {token}"}).status_code for _ in range(3)]
    assert second_key == [200, 200, 429]


def test_x_forwarded_for_does_not_change_the_key(
    limited: TestClient[Litestar], db: Session, prefix: str, store: redis.Redis
) -> None:
    who = factories.actor(db, Role.HOUSEHOLD)
    statuses = [
        limited.get(
            ME, headers={**who.headers, "X-Forwarded-For": f"10.0.0.{i}", "X-Real-IP": f"10.1.0.{i}"}
        ).status_code
        for i in range(LIMIT + 1)
    ]
    assert statuses == [200] * LIMIT + [429]
    assert list(store.scan_iter(f"{prefix}:*")) == [f"{prefix}:{who.id}"]


def test_unauthenticated_and_public_requests_are_not_counted(
    limited: TestClient[Litestar], db: Session, prefix: str, store: redis.Redis
) -> None:
    for _ in range(LIMIT + 2):
        assert limited.get(ME).status_code == 401
        assert limited.get(ME, headers={"Authorization": "Bearer fmk_bad_token"}).status_code == 401
        assert limited.get("/health").status_code == 200
    assert list(store.scan_iter(f"{prefix}:*")) == []
    who = factories.actor(db, Role.HOUSEHOLD)
    assert _spend(limited, who, LIMIT) == [200] * LIMIT


def test_a_new_window_starts_when_the_counter_expires(
    limited: TestClient[Litestar], db: Session, prefix: str, store: redis.Redis
) -> None:
    who = factories.actor(db, Role.HOUSEHOLD)
    assert _spend(limited, who, LIMIT + 1)[-1] == 429
    store.delete(f"{prefix}:{who.id}")  # as its expiry would, a minute later
    assert _spend(limited, who, 1) == [200]
    assert store.get(f"{prefix}:{who.id}") == "1"


def test_concurrent_hits_never_lose_a_count(prefix: str) -> None:
    """INCR and PEXPIRE in one script: 50 simultaneous hits against a limit of 20 let exactly 20 through."""

    async def burst() -> list[bool]:
        limiter = RedisLimiter(REDIS_URL, 20, prefix)
        await limiter.start()
        try:
            decisions = await asyncio.gather(*(limiter.hit("subject") for _ in range(50)))
        finally:
            await limiter.close()
        return [d.allowed for d in decisions]

    allowed = asyncio.run(burst())
    assert sum(allowed) == 20
    assert redis.Redis.from_url(REDIS_URL).get(f"{prefix}:subject") == b"50"


def test_an_unreachable_redis_lets_requests_through() -> None:
    async def hit() -> bool:
        limiter = RedisLimiter("redis://127.0.0.1:1/0", 1)
        try:
            return all([(await limiter.hit("x")).allowed, (await limiter.hit("x")).allowed])
        finally:
            await limiter.close()

    assert asyncio.run(hit())


# -- settings -----------------------------------------------------------------------------------


def test_settings_choose_the_store(monkeypatch: pytest.MonkeyPatch) -> None:
    embedded = Settings(database=DatabaseSettings(url="sqlite://"), jobs=JobSettings(broker_url="in-process"))
    assert embedded.api.rate_limit_per_minute == 3_000
    assert embedded.rate_limit_redis_url is None
    assert isinstance(make_limiter(3_000, embedded.rate_limit_redis_url), MemoryLimiter)
    on_broker = Settings(jobs=JobSettings(broker_url=REDIS_URL))
    assert on_broker.rate_limit_redis_url == REDIS_URL
    own = Settings(
        api=ApiSettings(rate_limit_redis_url="redis://elsewhere:6379/3"), jobs=JobSettings(broker_url=REDIS_URL)
    )
    assert own.rate_limit_redis_url == "redis://elsewhere:6379/3"
    assert make_limiter(0, REDIS_URL) is None
    monkeypatch.setenv("FLEX_API_RATE_LIMIT_PER_MINUTE", "7")
    assert ApiSettings().rate_limit_per_minute == 7


def test_production_refuses_in_memory_counters() -> None:
    production = SecuritySettings(environment="production", api_key_pepper="p" * 40)
    database = DatabaseSettings(url="postgresql://db/flex")
    with pytest.raises(ValidationError, match="FLEX_API_RATE_LIMIT_REDIS_URL"):
        Settings(
            database=database,
            jobs=JobSettings(broker_url="amqp://rabbit//"),
            security=production,
            api=ApiSettings(rate_limit_redis_url=None),
        )
    assert Settings(database=database, jobs=JobSettings(broker_url=REDIS_URL), security=production)


# -- the pure rules and the in-memory limiter (no services) -------------------------------------


def test_decide_by_hand() -> None:
    assert decide(3, 3, 12_000.0).allowed
    refused = decide(4, 3, 12_001.0)
    assert (refused.allowed, refused.retry_after_s) == (False, 13)
    assert decide(4, 3, 0.0).retry_after_s == 1  # never "retry after 0"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def test_memory_limiter_by_hand() -> None:
    clock = FakeClock()
    limiter = MemoryLimiter(3, clock=clock)
    assert [limiter.hit_now("a").allowed for _ in range(3)] == [True] * 3
    clock.now += 20.0
    refused = limiter.hit_now("a")
    assert (refused.allowed, refused.count, refused.retry_after_s) == (False, 4, 40)
    assert limiter.hit_now("b").allowed  # another subject has its own window
    clock.now += 39.5
    assert limiter.hit_now("a").retry_after_s == 1
    clock.now += 0.5  # the window of "a" (1000..1060) is over
    fresh = limiter.hit_now("a")
    assert (fresh.allowed, fresh.count, fresh.retry_after_s) == (True, 1, 60)


def test_memory_limiter_prunes_ended_windows() -> None:
    clock = FakeClock()
    limiter = MemoryLimiter(1, clock=clock)
    limiter.PRUNE_EVERY = 10
    for i in range(9):
        limiter.hit_now(f"s{i}")
    clock.now += 61
    limiter.hit_now("last")  # the 10th hit prunes the nine ended windows
    assert set(limiter._windows) == {"last"}


@settings(max_examples=150, deadline=None)
@given(
    limit=st.integers(1, 5),
    # Half-second steps are exact in binary, so window edges are compared without rounding.
    steps=st.lists(st.tuples(st.sampled_from("ab"), st.integers(0, 90).map(lambda n: n / 2)), min_size=1, max_size=60),
)
def test_memory_limiter_window_properties(limit: int, steps: list[tuple[str, float]]) -> None:
    """Safety: at most ``2 x limit`` passes in any 60 s span per subject (the fixed-window bound).
    Liveness: a request is refused only if ``limit`` requests of its subject passed in the 60 s before."""
    clock = FakeClock()
    limiter = MemoryLimiter(limit, clock=clock)
    passed: dict[str, list[float]] = {"a": [], "b": []}
    for subject, gap in steps:
        clock.now += gap
        decision = limiter.hit_now(subject)
        recent = [t for t in passed[subject] if t > clock.now - 60]
        if decision.allowed:
            passed[subject].append(clock.now)
        else:
            assert len(recent) >= limit
            assert 1 <= decision.retry_after_s <= 60
    for times in passed.values():
        for start in times:
            assert sum(start <= t < start + 60 for t in times) <= 2 * limit
