"""A per-repository token bucket for webhook deliveries: in Redis when there is one, else in the
database. Checked after the signature (an unsigned flood must not use up a repository's budget)
and before anything is stored: a refused delivery leaves nothing behind, an accepted one is kept.
"""

from __future__ import annotations

import functools
import math
import time
from dataclasses import dataclass

from django.conf import settings
from django.db import IntegrityError, transaction

from webhooks.models import RateBucket

# Redis runs it atomically; TIME is the server's clock, so web processes on hosts whose clocks
# disagree share one bucket correctly.
_TOKEN_BUCKET = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'updated')
local tokens = tonumber(state[1]) or burst
local updated = tonumber(state[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - updated) * rate)
local wait = 0
if tokens >= 1 then
  tokens = tokens - 1
else
  wait = (1 - tokens) / rate
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'updated', tostring(now))
redis.call('EXPIRE', KEYS[1], math.ceil(burst / rate) + 60)
return tostring(wait)
"""


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    retry_after: int = 0  # whole seconds, for the Retry-After header


def take(repository_id: int) -> Decision:
    """Take one delivery's token from the repository's bucket."""
    rate, burst = settings.CICD_WEBHOOK_RATE, settings.CICD_WEBHOOK_BURST
    if rate <= 0:
        return Decision(True)
    if settings.REDIS_URL:
        wait = float(_script()(keys=[f"cicd:webhook-rate:{repository_id}"], args=[rate, burst]))
    else:
        wait = _take_from_database(repository_id, rate, burst)
    if wait <= 0:
        return Decision(True)
    return Decision(False, max(1, math.ceil(wait)))


@functools.cache
def _script():  # type: ignore[no-untyped-def]
    import redis

    client = redis.Redis.from_url(settings.REDIS_URL)
    return client.register_script(_TOKEN_BUCKET)


def _take_from_database(repository_id: int, rate: float, burst: int) -> float:
    for _ in range(2):
        try:
            with transaction.atomic():
                bucket = RateBucket.objects.select_for_update().filter(pk=repository_id).first()
                now = time.time()
                if bucket is None:
                    RateBucket.objects.create(
                        repository_id=repository_id, tokens=burst - 1, updated=now
                    )
                    return 0.0
                tokens = min(burst, bucket.tokens + max(0.0, now - bucket.updated) * rate)
                wait = 0.0
                if tokens >= 1:
                    tokens -= 1
                else:
                    wait = (1 - tokens) / rate
                RateBucket.objects.filter(pk=repository_id).update(tokens=tokens, updated=now)
                return wait
        except IntegrityError:
            continue  # another request created the bucket first: take from it
    return 0.0
