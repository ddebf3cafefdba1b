"""The test harness: a private msarch stack on either backend, for msarch's tests, its
benchmarks and users' own tests (as faststream.rabbit ships TestRabbitBroker).

    async with running_stack("nats", api_key="secret") as stack:
        RoundtripLoad(stack.gateway_url, "smoke")

- isolation: a namespace per run, free ports, settings for both backends, clean-up of only ours;
- stack: the five services as processes (`Stack`, `running_stack`, `stack_factory`);
- load: roundtrips under load, every answer recorded, and the checks that nothing was lost;
- http_client: the keep-alive HTTP/1.1 client the load runs on;
- servers, tcp_proxy: a private Redis, NATS or RabbitMQ, a replicated Redis with Sentinels
  (ReplicatedRedis), and a cuttable link, for fault tests.

Nothing here imports pytest: the fixtures are the test suite's, built on these.
"""

from msarch.testing.isolation import (
    BACKENDS,
    BROKERS,
    TEST_REDIS_URL,
    delete_namespace,
    isolated_settings,
    new_namespace,
)
from msarch.testing.load import RoundtripLoad
from msarch.testing.stack import Stack, StackFactory, running_stack, stack_factory, wait_for

__all__ = [
    "BACKENDS",
    "BROKERS",
    "TEST_REDIS_URL",
    "RoundtripLoad",
    "Stack",
    "StackFactory",
    "delete_namespace",
    "isolated_settings",
    "new_namespace",
    "running_stack",
    "stack_factory",
    "wait_for",
]
