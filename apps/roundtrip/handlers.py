"""The roundtrip service consumes nothing; it publishes `event` (from its POST route)."""

from msarch import channels
from msarch.service import Messaging

MESSAGING = Messaging("roundtrip", publishes=(channels.EVENT,))
