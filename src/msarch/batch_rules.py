"""The batch rules: the one statement of how a batch is assembled, pure and storage-free.

A batch of `size` items is assembled from single items that may arrive in any
order, more than once, interleaved with other batches. This module is the
source of truth for those rules. The store applies them atomically inside
Redis (`msarch/storage/scripts/stage_items.lua`, `fail_batch.lua`), and
tests/unit/test_storage_model.py checks the scripts, and the replay of the
events they log, against `BatchRules` step by step.

- The first item fixes the batch size. An item whose size differs, or whose
  index is outside 0..size-1, makes the batch Invalid.
- A duplicate index changes nothing.
- The batch completes (Done) when every index 0..size-1 has arrived, whichever
  arrives last; it completes exactly once.
- Once a batch is final (Done, Invalid, TimeoutExceeded), further items are ignored.
- A batch with no new item for the assembly timeout becomes TimeoutExceeded.
"""

from dataclasses import dataclass, field
from enum import StrEnum

from msarch.messages import BatchStatus


class Outcome(StrEnum):
    """What receiving an item did; the Lua script answers with the same values."""

    STAGED = "staged"
    """The item was new; the batch is still incomplete."""
    DUPLICATE = "duplicate"
    """The item had arrived before; nothing changed."""
    COMPLETED = "completed"
    """This item completed the batch: it is now Done (happens once per batch)."""
    INVALIDATED = "invalidated"
    """This item contradicts the batch: it is now Invalid (happens once per batch)."""
    IGNORED = "ignored"
    """The batch was already final; nothing changed."""

    @property
    def made_final(self) -> bool:
        """This item ended the batch (Done or Invalid): worth reporting once."""
        return self in (Outcome.COMPLETED, Outcome.INVALIDATED)


@dataclass
class BatchRules:
    """One batch as the rules see it: its size, the indices received, its status."""

    size: int | None = None
    received: set[int] = field(default_factory=set)
    status: BatchStatus = BatchStatus.None_
    detail: str | None = None

    def receive(self, index: int, size: int) -> Outcome:
        if self.status.is_final:
            return Outcome.IGNORED
        problem = self._problem_with(index, size)
        if problem is not None:
            self.status, self.detail = BatchStatus.Invalid, problem
            self.received.clear()
            return Outcome.INVALIDATED
        self.size = size
        if index in self.received:
            return Outcome.DUPLICATE
        self.received.add(index)
        if len(self.received) == size:
            self.status = BatchStatus.Done
            return Outcome.COMPLETED
        self.status = BatchStatus.PendingDatabase
        return Outcome.STAGED

    def time_out(self) -> bool:
        """Give up on an incomplete batch; True if this call made it TimeoutExceeded."""
        if self.status.is_final:
            return False
        self.status = BatchStatus.TimeoutExceeded
        self.detail = f"received {len(self.received)} of {self.size} items"
        self.received.clear()
        return True

    def _problem_with(self, index: int, size: int) -> str | None:
        if size < 1:
            return f"size {size} is not positive"
        if self.size is not None and size != self.size:
            return f"item {index} says size {size}, the batch has size {self.size}"
        if not 0 <= index < size:
            return f"index {index} is outside 0..{size - 1}"
        return None
