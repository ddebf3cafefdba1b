"""The Lua scripts of the store and of the gateway's rate limit, one file each, read once when
msarch.storage is imported.

Each runs atomically in Redis: the event is appended and the projections are
updated together, or nothing is. Nothing is patched into their text; what
they need (the final statuses included) comes in KEYS and ARGV. Each event they append
carries 'version', the payload's schema version: msarch.upcasting.CURRENT_VERSION (a unit test
holds the two together).
"""

from importlib import resources


def _read(name: str) -> str:
    return resources.files(__package__).joinpath(f"{name}.lua").read_text(encoding="utf-8")


STORE_KEY_VALUE = _read("store_key_value")
REQUEST_BATCH = _read("request_batch")
STAGE_ITEMS = _read("stage_items")
FAIL_BATCH = _read("fail_batch")
KEEP_ASSEMBLING = _read("keep_assembling")
RATE_LIMIT = _read("rate_limit")
TRIM_EVENTS = _read("trim_events")
