"""Writes that are acknowledged only once replicas hold them: the write, then Redis WAIT.

A failover promotes a replica; a write that only the old primary had is gone with it. So
with Replication(replicas=n), every write the store acknowledges a message after is sent
in one pipeline with `WAIT n timeout`, on the same connection (WAIT counts the replicas
that have that connection's writes). Fewer than n in time raises NotReplicatedError,
which the store treats as Redis being unavailable: the message stays unacked and the
write is retried (the scripts are idempotent, so the retry finds it and waits again).
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError

from msarch.storage.scripts import Script


class NotReplicatedError(RedisConnectionError):
    """Fewer replicas than required confirmed a write within the timeout.

    The write may stand on the primary, but a failover could lose it: do not acknowledge
    what depends on it; retry, as after any other Redis outage (msarch.resilience)."""


@dataclass(frozen=True)
class Replication:
    replicas: int = 0
    """Replicas that must hold a write before it counts (0: the primary's word is enough)."""
    timeout_ms: int = 2000
    """How long WAIT waits for them."""


NO_WAIT = Replication()
"""A write counts once the primary has it (a single Redis; tests at a raw URL)."""


class DurableWrites:
    """The one place that writes and then waits for the replicas (KeyValues and Batches use it)."""

    def __init__(self, client: "aioredis.Redis", replication: Replication, mark: str) -> None:
        self._redis = client
        self.replication = replication
        self._mark = mark

    async def script(self, script: Script, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """Run a Lua script; its answer once enough replicas hold what it wrote (timed, the
        wait for them included)."""
        if not self.replication.replicas:
            return await script(keys, args)
        return await script.timed(self._replicated(script, keys, args))

    async def _replicated(self, script: Script, keys: Sequence[str], args: Sequence[Any]) -> Any:
        command = ("EVALSHA", script.registered.sha, len(keys), *keys, *args)
        try:
            return await self._then_wait(command, keys[0])
        except NoScriptError:  # a primary that never ran it: new after a failover or a restart
            await self._redis.script_load(script.registered.script)
            return await self._then_wait(command, keys[0])

    async def command(self, name: str, key: str, *args: Any) -> Any:
        """Run one write command on `key`; its answer once enough replicas hold it."""
        if not self.replication.replicas:
            return await self._redis.execute_command(name, key, *args)  # type: ignore[no-untyped-call]
        return await self._then_wait((name, key, *args), key)

    async def _then_wait(self, command: Sequence[Any], key: str) -> Any:
        wanted, timeout_ms = self.replication.replicas, self.replication.timeout_ms
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.execute_command(*command)
            # WAIT waits for this connection's last replicated write, and a redelivery's script
            # may write nothing: this publish (replicated, no key) moves that mark to all the
            # primary holds now, the first delivery's writes included.
            pipe.publish(self._mark, "")
            pipe.wait(wanted, timeout_ms)
            answer, _, acknowledged = await pipe.execute()
        if acknowledged < wanted:
            raise NotReplicatedError(
                f"{acknowledged} of {wanted} replicas confirmed the write to {key} within "
                f"{timeout_ms} ms: not acknowledged, to be retried (is a replica down or lagging?)"
            )
        return answer
