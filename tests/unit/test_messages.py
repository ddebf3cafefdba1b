"""The messages at every boundary: limits in characters and UTF-8 bytes, unicode kept exactly."""

import json
from datetime import UTC
from uuid import UUID, uuid4

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from msarch.messages import (
    KEY_MAX_CHARS,
    VALUE_MAX_BYTES,
    BatchItem,
    BatchReply,
    BatchStatus,
    KeyValue,
    KeyValueIn,
    item_of,
)
from tests.unit.text_samples import UNICODE_SAMPLES


def _bytes(text: str) -> int:
    return len(text.encode("utf-8"))


# -- keys ------------------------------------------------------------------------


@pytest.mark.parametrize("model", [KeyValueIn, KeyValue])
@pytest.mark.parametrize("length", [1, 2, KEY_MAX_CHARS - 1, KEY_MAX_CHARS])
def test_key_of_1_to_512_chars_is_accepted(model: type[KeyValueIn | KeyValue], length: int) -> None:
    kv = model(key="k" * length, value="")
    assert len(kv.key) == length


@pytest.mark.parametrize("model", [KeyValueIn, KeyValue])
@pytest.mark.parametrize("key", ["", "k" * (KEY_MAX_CHARS + 1), "😀" * (KEY_MAX_CHARS + 1)])
def test_key_outside_1_to_512_chars_is_rejected(
    model: type[KeyValueIn | KeyValue], key: str
) -> None:
    with pytest.raises(ValidationError) as raised:
        model(key=key, value="v")
    assert raised.value.errors()[0]["loc"] == ("key",)


def test_key_limit_counts_characters_not_bytes() -> None:
    key = "😀" * KEY_MAX_CHARS  # 2048 bytes, 512 characters
    assert KeyValueIn(key=key, value="v").key == key


def test_key_is_required() -> None:
    with pytest.raises(ValidationError) as raised:
        KeyValueIn.model_validate({"value": "v"})
    assert [e["loc"] for e in raised.value.errors()] == [("key",)]


@pytest.mark.parametrize("key", [5, None, ["k"], {"k": 1}])
def test_key_must_be_a_string(key: object) -> None:
    with pytest.raises(ValidationError):
        KeyValueIn.model_validate({"key": key, "value": "v"})


# -- values ------------------------------------------------------------------------


@pytest.mark.parametrize("model", [KeyValueIn, KeyValue])
@pytest.mark.parametrize(
    "value",
    [
        "",
        "a" * VALUE_MAX_BYTES,  # exactly 64 KiB of ASCII
        "é" * (VALUE_MAX_BYTES // 2),  # exactly 64 KiB of 2-byte characters
        "€" * (VALUE_MAX_BYTES // 3) + "a",  # 3-byte characters, 65536 bytes
        "😀" * (VALUE_MAX_BYTES // 4),  # exactly 64 KiB of 4-byte characters
    ],
    ids=["empty", "ascii", "2-byte", "3-byte", "4-byte"],
)
def test_value_up_to_64_kib_in_utf8_is_accepted(
    model: type[KeyValueIn | KeyValue], value: str
) -> None:
    assert _bytes(value) <= VALUE_MAX_BYTES
    assert model(key="k", value=value).value == value


@pytest.mark.parametrize("model", [KeyValueIn, KeyValue])
@pytest.mark.parametrize(
    "value",
    [
        "a" * (VALUE_MAX_BYTES + 1),
        "é" * (VALUE_MAX_BYTES // 2) + "a",
        "😀" * (VALUE_MAX_BYTES // 4 + 1),
        "é" * 40_000,  # 40 000 characters, far under 65536, but 80 000 bytes
        "\U0001f600" * 20_000,  # 20 000 characters, 80 000 bytes
    ],
    ids=["ascii+1", "2-byte+1", "4-byte+1", "2-byte-under-char-limit", "4-byte-under-char-limit"],
)
def test_value_over_64_kib_in_utf8_is_rejected_even_under_65536_chars(
    model: type[KeyValueIn | KeyValue], value: str
) -> None:
    assert _bytes(value) > VALUE_MAX_BYTES
    with pytest.raises(ValidationError) as raised:
        model(key="k", value=value)
    assert raised.value.errors()[0]["loc"] == ("value",)


def test_value_limit_applies_to_batch_items() -> None:
    with pytest.raises(ValidationError):
        BatchItem(batch_id=uuid4(), index=0, size=1, key="k", value="a" * (VALUE_MAX_BYTES + 1))


def test_value_rejection_names_the_byte_limit() -> None:
    with pytest.raises(ValidationError) as raised:
        KeyValueIn(key="k", value="é" * 40_000)
    assert f"{VALUE_MAX_BYTES} bytes" in str(raised.value)


# -- unicode kept exactly ----------------------------------------------------------------


@pytest.mark.parametrize("text", UNICODE_SAMPLES)
def test_unicode_survives_the_wire_exactly(text: str) -> None:
    kv = KeyValue(key=text, value=text * 3)
    wire = kv.model_dump_json()
    back = KeyValue.model_validate_json(wire)
    assert back == kv
    assert back.key == text  # no normalisation, no stripping, NUL kept
    assert back.value.encode("utf-8") == (text * 3).encode("utf-8")


@pytest.mark.parametrize("text", UNICODE_SAMPLES)
def test_unicode_from_http_json_is_kept_exactly(text: str) -> None:
    for body in (
        json.dumps({"key": text, "value": text}),
        json.dumps({"key": text, "value": text}, ensure_ascii=False),
    ):
        parsed = KeyValueIn.model_validate_json(body)
        assert (parsed.key, parsed.value) == (text, text)


@given(
    key=st.text(min_size=1, max_size=KEY_MAX_CHARS),
    value=st.text(max_size=2000),
)
def test_any_text_within_limits_round_trips(key: str, value: str) -> None:
    kv = KeyValue(key=key, value=value)
    back = KeyValue.model_validate_json(kv.model_dump_json())
    assert (back.key, back.value, back.id, back.accepted_at) == (
        key,
        value,
        kv.id,
        kv.accepted_at,
    )


def test_lone_surrogate_in_json_is_rejected() -> None:
    with pytest.raises(ValidationError):
        KeyValueIn.model_validate_json('{"key": "k", "value": "\\ud800"}')


# -- the envelope ------------------------------------------------------------------------


def test_key_value_gets_an_id_and_a_utc_time_at_the_edge() -> None:
    first, second = KeyValue(key="k", value="v"), KeyValue(key="k", value="v")
    assert isinstance(first.id, UUID)
    assert first.id != second.id
    assert first.accepted_at.tzinfo is not None
    assert first.accepted_at.utcoffset() == UTC.utcoffset(None)


def test_an_unknown_field_in_an_http_body_is_refused() -> None:
    with pytest.raises(ValidationError) as raised:
        KeyValueIn.model_validate({"key": "k", "value": "v", "extra": 1})
    assert raised.value.errors()[0]["type"] == "extra_forbidden"


def test_an_unknown_field_in_a_bus_message_is_kept_for_the_next_hop() -> None:
    """A newer producer's field, during a rolling upgrade: kept, and sent on as it came."""
    kv = KeyValue.model_validate_json('{"key": "k", "value": "v", "priority": {"level": 2}}')
    assert kv.model_extra == {"priority": {"level": 2}}
    assert json.loads(kv.model_dump_json())["priority"] == {"level": 2}
    with pytest.raises(ValidationError):
        KeyValue.model_validate({"value": "v", "priority": 2})  # no key: not usable


def test_messages_are_frozen() -> None:
    kv = KeyValue(key="k", value="v")
    with pytest.raises(ValidationError):
        kv.key = "other"  # type: ignore[misc]
    assert kv.key == "k"


# -- batches ------------------------------------------------------------------------------


@pytest.mark.parametrize(("index", "size"), [(-1, 1), (0, 0), (0, -1)])
def test_batch_item_needs_a_natural_index_and_a_positive_size(index: int, size: int) -> None:
    with pytest.raises(ValidationError):
        BatchItem(batch_id=uuid4(), index=index, size=size, key="k", value="v")


def test_item_of_follows_the_seed_naming() -> None:
    batch_id = uuid4()
    item = item_of(batch_id, 3, 7)
    assert (item.batch_id, item.index, item.size) == (batch_id, 3, 7)
    assert item.key == f"{batch_id}_key_3"
    assert item.value == f"{batch_id}_value_3"


SEED_NAMES = [
    "None",
    "PendingConsume",
    "PendingDatabase",
    "DatabaseOperationFailed",
    "Invalid",
    "TimeoutExceeded",
    "Done",
]


def test_batch_status_has_exactly_the_seed_names() -> None:
    assert [status.value for status in BatchStatus] == SEED_NAMES


@pytest.mark.parametrize("status", list(BatchStatus), ids=str)
def test_batch_status_is_serialised_by_name(status: BatchStatus) -> None:
    reply = BatchReply(batch_id=uuid4(), status=status, detail="why")
    wire = json.loads(reply.model_dump_json())
    assert wire["status"] == status.value
    assert isinstance(wire["status"], str)
    assert wire["status"] in SEED_NAMES
    assert BatchReply.model_validate_json(reply.model_dump_json()) == reply
    assert reply.model_dump(mode="json")["status"] == status.value


def test_batch_status_is_read_by_name_only() -> None:
    batch_id = str(uuid4())
    assert BatchReply.model_validate({"batch_id": batch_id, "status": "None"}).status is (
        BatchStatus.None_
    )
    for wrong in (0, 6, "done", "None_", "DONE"):
        with pytest.raises(ValidationError):
            BatchReply.model_validate({"batch_id": batch_id, "status": wrong})


def test_final_statuses() -> None:
    final = {s for s in BatchStatus if s.is_final}
    assert final == {
        BatchStatus.Done,
        BatchStatus.Invalid,
        BatchStatus.DatabaseOperationFailed,
        BatchStatus.TimeoutExceeded,
    }
