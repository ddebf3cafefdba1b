"""The four channels: broker-neutral names and how each one is delivered."""

from dataclasses import dataclass
from enum import Enum

from pydantic import BaseModel

from msarch.messages import BatchItem, BatchReply, KeyValue


class Delivery(Enum):
    WORK = "work"
    """Competing consumers: each message goes to exactly one instance."""
    BROADCAST = "broadcast"
    """Every running instance gets every message."""


@dataclass(frozen=True)
class Channel:
    name: str
    delivery: Delivery
    payload: type[BaseModel]
    producer: str
    consumer: str


EVENT = Channel("event", Delivery.WORK, KeyValue, "roundtrip", "store")
FORWARD_ROUNDTRIP = Channel("forward_roundtrip", Delivery.BROADCAST, KeyValue, "store", "websocket")
BATCH = Channel("batch", Delivery.WORK, BatchItem, "batch", "store")
BATCH_REPLY = Channel("batch_reply", Delivery.BROADCAST, BatchReply, "store", "batch")

ALL = (EVENT, FORWARD_ROUNDTRIP, BATCH, BATCH_REPLY)
