"""Makes a service process "the next version" of msarch for the rolling-upgrade test: put this
folder on PYTHONPATH and Python imports it at start, before any msarch module is used. Its
KeyValue has a field the running version does not know; everything else is as it is."""

import msarch.messages as messages


class KeyValue(messages.KeyValue):
    priority: int = 1
    """What the next version adds: the running store neither knows it nor needs it."""


messages.KeyValue = KeyValue  # type: ignore[misc]
