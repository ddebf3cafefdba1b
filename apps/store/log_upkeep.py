"""The log's upkeep on a schedule: every MSARCH_SNAPSHOT_EVERY_S a snapshot, then, with
MSARCH_LOG_KEEP_S set, a trim of the events it holds that are older than that.

Every store instance runs this; the snapshot's lock lets one of them at a time do it, and the
trim never takes an event the latest snapshot lacks (msarch.snapshots).
"""

import asyncio
import logging

from msarch.service import Runtime
from msarch.snapshots import SnapshotBusy, kept_since, latest, take, trim

log = logging.getLogger("msarch.store.upkeep")


async def keep_the_log(runtime: Runtime) -> None:
    every_s, keep_s = runtime.settings.snapshot_every_s, runtime.settings.log_keep_s
    if not every_s:
        return
    while True:
        await asyncio.sleep(every_s)
        try:
            await upkeep(runtime, keep_s)
        except SnapshotBusy:
            log.debug("another instance is taking the snapshot")
        except Exception:
            log.exception("the log's upkeep failed; will try again")


async def upkeep(runtime: Runtime, keep_s: float | None) -> None:
    before = await latest(runtime.store)
    snapshot = await take(runtime.store)
    log.log(
        logging.DEBUG if snapshot == before else logging.INFO,
        "snapshot taken",
        extra={"event_id": snapshot.event_id, "events_applied": snapshot.events_applied,
               "seconds": snapshot.seconds},
    )  # fmt: skip
    if keep_s is None:
        return
    trimmed = await trim(runtime.store, kept_since(keep_s))
    if trimmed.removed:
        log.info(
            "log trimmed",
            extra={"removed": trimmed.removed, "first_kept": trimmed.first_kept},
        )
