"""The Redis key layout, written down once; every other module asks it for names.

All under "{namespace}msarch:" (the public layout in ARCHITECTURE.md):
  events                 the event log (a Redis Stream), the source of truth
  events:trimmed         the newest event id trimmed from the log (EventLog.trim_before)
  snapshot               the latest snapshot: its last event id and namespace (snapshots.py)
  snapshot:lock          held while a snapshot is taken (one at a time)
  kv:{key}               roundtrip value (projection of KeyValueStored)
  batch:{id}             final batch hash, index -> [key, value] (BatchCommitted)
  batch:{id}:staging     items of a batch being assembled (BatchItemStaged)
  batch:{id}:meta        status, size, stored, detail, timestamps
  batches                sorted index of committed batches, by commit time
  assembling             batches being assembled, by last activity: a staged item or
                         the publisher's keep-alive (for timeouts)
  msg:{message id}       idempotency marker: state ("stored", then "forwarded") and event id
  rate:{route}:{client}  the gateway's rate-limit state of a client on a route (it expires)
and one pub/sub channel, never subscribed to:
  replicated             published on after each write that waits for replicas (replication.py)
"""

from uuid import UUID

KV_PATTERN = "kv:*"
BATCH_META_PATTERN = "batch:*:meta"


class Keys:
    """The names of one namespace's keys."""

    def __init__(self, namespace: str = "") -> None:
        self.prefix = f"{namespace}msarch:"
        self.events = self.prefix + "events"
        self.events_trimmed = self.events + ":trimmed"
        self.snapshot = self.prefix + "snapshot"
        self.snapshot_lock = self.snapshot + ":lock"
        self.batches = self.prefix + "batches"
        self.assembling = self.prefix + "assembling"
        self.replication_mark = self.prefix + "replicated"

    def kv(self, key: str) -> str:
        return f"{self.prefix}kv:{key}"

    def message(self, message_id: str) -> str:
        return f"{self.prefix}msg:{message_id}"

    def batch(self, batch_id: UUID | str) -> str:
        """The final hash of a committed batch."""
        return f"{self.prefix}batch:{batch_id}"

    def batch_staging(self, batch_id: UUID | str) -> str:
        return f"{self.prefix}batch:{batch_id}:staging"

    def batch_meta(self, batch_id: UUID | str) -> str:
        return f"{self.prefix}batch:{batch_id}:meta"

    def rate_limit(self, route: str, client: str) -> str:
        return f"{self.prefix}rate:{route}:{client}"

    def matching(self, pattern: str) -> str:
        """A SCAN pattern for keys of this namespace only."""
        return self.prefix + pattern

    def relative(self, key: str) -> str:
        """The key without the namespace prefix, as reports name it."""
        return key.removeprefix(self.prefix)

    def kv_name(self, key: str) -> str:
        """The roundtrip key stored under a kv:{key} key."""
        return key.removeprefix(self.prefix + "kv:")

    def batch_id_of_meta(self, key: str) -> str:
        return key.removeprefix(self.prefix + "batch:").removesuffix(":meta")
