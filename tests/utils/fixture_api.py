"""What fixtures of tests/*/conftest.py give, for the tests that name it: their types and keys.

Tests import these from here, never from a conftest."""

from collections.abc import Callable, Sequence
from typing import Any, Protocol

from msarch.service import Runtime
from msarch.storage import Store

StoreFactory = Callable[[], Store]
"""`fresh_store`: a new, empty Store on every call."""


class RuntimeFactory(Protocol):
    """`make_runtime`: Runtime(service) as create_service builds it, nothing connected, on the
    bus of `backend` ('rabbit' or 'nats')."""

    def __call__(
        self, service: str, dependencies: Sequence[type[Any]] = (), *, backend: str = "rabbit"
    ) -> Runtime: ...


API_KEY = "e2e-secret-6f1c2d"
"""The key the gateway of `keyed_stack` (tests/e2e/conftest.py) requires."""
