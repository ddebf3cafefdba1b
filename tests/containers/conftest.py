"""The container suite: one private compose project of the local stack, shared by its tests.

Needs a Docker engine (`just test` starts one: tests/prepare.sh); without one the suite fails
and says what is missing, it never skips. The stack is built from the local images
(infra/local/images.sh reuses them when nothing changed) and removed with its volumes after.
"""

from collections.abc import AsyncIterator

import pytest

from tests.utils.compose import ComposeStack, run


@pytest.fixture(scope="session")
async def compose_stack() -> AsyncIterator[ComposeStack]:
    try:
        await run("docker", "info", timeout_s=30)
    except (OSError, RuntimeError) as exc:
        pytest.fail(
            f"the container suite needs a running Docker engine ({exc}); "
            "`just test` installs and starts one (tests/prepare.sh), or run infra/local/engine.sh",
            pytrace=False,
        )
    stack = ComposeStack()
    try:
        await stack.up()
        yield stack
    finally:
        await stack.down()
