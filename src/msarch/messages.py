"""The typed messages that travel between services, and the HTTP bodies at the edge."""

from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated
from uuid import UUID, uuid4

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

KEY_MAX_CHARS = 512
VALUE_MAX_BYTES = 64 * 1024

Key = Annotated[str, StringConstraints(min_length=1, max_length=KEY_MAX_CHARS)]


def _check_value(value: str) -> str:
    if len(value.encode("utf-8", "surrogatepass")) > VALUE_MAX_BYTES:
        raise ValueError(f"value is over {VALUE_MAX_BYTES} bytes in UTF-8")
    return value


def _now() -> datetime:
    return datetime.now(UTC)


class Message(BaseModel):
    """An HTTP body at the edge: a field it does not know is a mistake of the client's (422)."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class BusMessage(BaseModel):
    """A message between services. A field it does not know comes from a newer version of the
    producer during a rolling upgrade: kept (stored in the event, forwarded on), never a
    reason to refuse the message. What is refused, to the dead letters, is what this version
    cannot use: a missing field, a wrong type, a value out of range."""

    model_config = ConfigDict(frozen=True, extra="allow")


class KeyValueIn(Message):
    """The body of POST /api/roundtrip."""

    key: Key
    value: str = Field(max_length=VALUE_MAX_BYTES)

    _value_bytes = field_validator("value")(_check_value)


class KeyValue(BusMessage):
    """A key/value accepted at the edge; travels on `event` and `forward_roundtrip`."""

    id: UUID = Field(default_factory=uuid4)
    key: Key
    value: str = Field(max_length=VALUE_MAX_BYTES)
    accepted_at: datetime = Field(default_factory=_now)

    _value_bytes = field_validator("value")(_check_value)


class BatchStatus(StrEnum):
    """The seed's status enum, serialised by name."""

    None_ = "None"
    PendingConsume = "PendingConsume"
    PendingDatabase = "PendingDatabase"
    DatabaseOperationFailed = "DatabaseOperationFailed"
    Invalid = "Invalid"
    TimeoutExceeded = "TimeoutExceeded"
    Done = "Done"

    @property
    def is_final(self) -> bool:
        return self in _FINAL


_FINAL = {
    BatchStatus.Done,
    BatchStatus.Invalid,
    BatchStatus.DatabaseOperationFailed,
    BatchStatus.TimeoutExceeded,
}


class BatchItem(BusMessage):
    """One item of a batch; travels on `batch`."""

    batch_id: UUID
    index: int = Field(ge=0)
    size: int = Field(ge=1)
    key: Key
    value: str = Field(max_length=VALUE_MAX_BYTES)


class BatchReply(BusMessage):
    """The outcome of a batch; travels on `batch_reply`."""

    batch_id: UUID
    status: BatchStatus
    detail: str | None = None


def item_of(batch_id: UUID, index: int, size: int) -> BatchItem:
    """The seed's item: "{id}_key_{i}" / "{id}_value_{i}"."""
    return BatchItem(
        batch_id=batch_id,
        index=index,
        size=size,
        key=f"{batch_id}_key_{index}",
        value=f"{batch_id}_value_{index}",
    )
