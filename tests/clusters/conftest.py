"""The cluster suite: infra/compose.cluster.yaml with the local images, once on the RabbitMQ
cluster and once on the NATS JetStream cluster (the `nats` profile), Redis behind Sentinel in
both. Each is a private compose project (free host ports, its own network and volumes) that is
removed after its tests; the tests run in file order and leave the cluster whole for the next.

Needs a Docker engine: `just test` starts one (tests/prepare.sh). Without one the suite fails
and says so; it never skips.
"""

from collections.abc import AsyncIterator

import pytest

from msarch.testing.stack import wait_for
from tests.utils.cluster import Backend, Cluster
from tests.utils.compose import ComposeStack, running_compose

NATS_NODES = "nats://nats1:4222,nats://nats2:4222,nats://nats3:4222"


@pytest.fixture(scope="package", params=["rabbit", "nats"])
async def cluster(request: pytest.FixtureRequest) -> AsyncIterator[Cluster]:
    backend: Backend = request.param
    stack = (
        ComposeStack(stack="cluster")
        if backend == "rabbit"
        else ComposeStack(stack="cluster", broker_url=NATS_NODES, profiles=("nats",))
    )
    async for running in running_compose(stack):
        under_test = Cluster(running, backend)
        if backend == "nats":
            # The RabbitMQ nodes start with the file (the services wait for them); on the NATS
            # cluster nothing uses them: stopped, they leave both cores to what is measured.
            await running.compose("stop", "rabbitmq1", "rabbitmq2", "rabbitmq3")
        await wait_for(under_test.whole, 240, 1)
        yield under_test
