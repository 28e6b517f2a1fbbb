"""Per-participant rate limiting: a fixed window of ``limit`` requests per 60 s, counted in Redis.

Algorithm (fixed window anchored at the first request): the first counted request of a participant
creates the counter ``{prefix}:{participant_id}`` with a time-to-live of one window; every request
increments it; a request that makes the count exceed the limit is refused with 429 and
``Retry-After`` = the counter's remaining time-to-live, rounded up to whole seconds. When the
counter expires, the next request starts a new window. So at most ``limit`` requests pass per window
per participant, and at most ``2 × limit`` in any 60 s span (a burst at the end of one window and at
the start of the next), the usual fixed-window bound.

INCR and PEXPIRE run in one Lua script: one round trip, and atomic, so concurrent requests from
many API processes never lose a count or leave a counter without an expiry. The window is anchored
on the Redis server's clock (its key expiry), not on the API processes' clocks, so skew between
them does not matter.

The key is the authenticated participant's id (the principal of the API key), never a client-sent
header such as ``X-Forwarded-For``: keys of one participant share its budget, and a client cannot
escape it by rotating addresses or spoofing headers. Unauthenticated requests are refused with 401
before this point and are not counted.

Without a Redis URL (the embedded mode) the counters live in the memory of the one process
(:class:`MemoryLimiter`, the same algorithm). With several API processes that would multiply the
limit by their number, which is why production requires Redis (see
:class:`market.core.config.Settings`). If Redis cannot be reached, requests pass (fail open) and the
error is logged: an outage of the limiter must not take the market down with it.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import redis.asyncio as aioredis
from litestar.enums import ScopeType
from litestar.exceptions import TooManyRequestsException
from litestar.middleware import ASGIMiddleware
from litestar.types import ASGIApp, Receive, Scope, Send
from redis.exceptions import RedisError

from market.auth.principal import Principal

log = logging.getLogger("flexmarket.ratelimit")

WINDOW_SECONDS = 60
DEFAULT_KEY_PREFIX = "flexmarket:ratelimit"

# KEYS[1] the counter, ARGV[1] the window in ms. Returns {count, remaining ttl in ms}.
# A counter without a TTL (impossible unless someone wrote the key by hand) gets one, so no
# participant can be locked out for ever.
_HIT_SCRIPT = """
local count = redis.call('INCR', KEYS[1])
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then
    redis.call('PEXPIRE', KEYS[1], ARGV[1])
    ttl = tonumber(ARGV[1])
end
return {count, ttl}
"""


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome of counting one request."""

    allowed: bool
    count: int
    """Requests counted in the current window, this one included."""
    retry_after_s: int
    """Whole seconds until the window ends (at least 1)."""


def decide(count: int, limit: int, remaining_ms: float) -> Decision:
    """Allowed iff ``count <= limit``; Retry-After is the window's rest rounded up, at least 1 s."""
    return Decision(allowed=count <= limit, count=count, retry_after_s=max(1, math.ceil(remaining_ms / 1000)))


class Limiter(Protocol):
    """Counts one request of ``subject`` and says whether it may pass."""

    limit: int

    async def hit(self, subject: str) -> Decision: ...

    async def start(self) -> None: ...

    async def close(self) -> None: ...


class MemoryLimiter:
    """The fixed-window counter in this process's memory (the embedded mode; one process only).

    ``clock`` returns monotonic seconds; tests pass their own to step time without sleeping.
    """

    PRUNE_EVERY = 10_000

    def __init__(
        self, limit: int, window_s: float = WINDOW_SECONDS, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.limit = limit
        self.window_s = window_s
        self.clock = clock
        self._windows: dict[str, tuple[int, float]] = {}  # subject -> (count, window end)
        self._lock = threading.Lock()  # one app may serve from several event loops (test clients)
        self._hits = 0

    def hit_now(self, subject: str) -> Decision:
        now = self.clock()
        with self._lock:
            self._hits += 1
            if self._hits % self.PRUNE_EVERY == 0:
                self._windows = {k: v for k, v in self._windows.items() if v[1] > now}
            count, end = self._windows.get(subject, (0, now))
            if end <= now:
                count, end = 0, now + self.window_s
            count += 1
            self._windows[subject] = (count, end)
        return decide(count, self.limit, (end - now) * 1000)

    async def hit(self, subject: str) -> Decision:
        return self.hit_now(subject)

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None


class RedisLimiter:
    """The fixed-window counter in Redis, shared by every API process.

    The client is made in :meth:`start` and closed in :meth:`close` (the app's start-up and shutdown),
    so its connections always belong to the running event loop.
    """

    def __init__(self, url: str, limit: int, prefix: str = DEFAULT_KEY_PREFIX, window_s: int = WINDOW_SECONDS) -> None:
        self.url = url
        self.limit = limit
        self.prefix = prefix
        self.window_ms = window_s * 1000
        self._client: aioredis.Redis | None = None
        self._script: Any = None

    def key(self, subject: str) -> str:
        return f"{self.prefix}:{subject}"

    async def start(self) -> None:
        if self._client is None:
            # Short timeouts: a slow Redis must not hold requests up for long (we fail open).
            self._client = aioredis.Redis.from_url(self.url, socket_timeout=1.0, socket_connect_timeout=1.0)
            self._script = self._client.register_script(_HIT_SCRIPT)

    async def close(self) -> None:
        client, self._client, self._script = self._client, None, None
        if client is not None:
            await client.aclose()

    async def hit(self, subject: str) -> Decision:
        await self.start()
        try:
            count, remaining_ms = await self._script(keys=[self.key(subject)], args=[self.window_ms])
        except (RedisError, OSError) as exc:
            log.warning("rate limiter unavailable, request let through: %s", exc)
            return Decision(allowed=True, count=0, retry_after_s=1)
        return decide(int(count), self.limit, float(remaining_ms))


def make_limiter(limit: int, redis_url: str | None, prefix: str = DEFAULT_KEY_PREFIX) -> Limiter | None:
    """The limiter the settings ask for; None when limiting is off (``limit`` 0)."""
    if limit <= 0:
        return None
    if redis_url is None:
        return MemoryLimiter(limit)
    return RedisLimiter(redis_url, limit, prefix)


class RateLimitMiddleware(ASGIMiddleware):
    """Refuse a participant's request beyond its budget with 429 (problem+json, ``Retry-After``).

    It sits after :class:`market.core.http.ApiKeyAuthentication`, so ``scope["user"]`` is the
    principal; requests without one (the public paths) are not counted.
    """

    scopes = (ScopeType.HTTP,)

    def __init__(self, limiter: Limiter) -> None:
        self.limiter = limiter

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        principal = scope.get("user")
        if isinstance(principal, Principal):
            decision = await self.limiter.hit(str(principal.participant_id))
            if not decision.allowed:
                raise TooManyRequestsException(
                    detail=f"rate limit exceeded: at most {self.limiter.limit} requests per minute per participant; "
                    f"retry after {decision.retry_after_s} s",
                    headers={"Retry-After": str(decision.retry_after_s)},
                )
        await next_app(scope, receive, send)
