"""The series msarch's services export, as a Prometheus that scrapes a stack must have them:
which service (the job) has which metric with which labels, and which must show traffic once
a roundtrip, a batch, a websocket client and a bad request went through.

Derived from msarch.channels (who publishes and who consumes each channel), so a new channel
is expected everywhere it flows without a change here.
"""

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from msarch import channels
from msarch.settings import SERVICES

METRIC_NAME = re.compile(r"\bmsarch_[a-z_]+\b")


@dataclass(frozen=True)
class Expected:
    """One series: `metric` from `job`, with at least these labels; with `at_least`, the sum of
    its values must be that much (it saw traffic)."""

    metric: str
    job: str
    labels: Mapping[str, str] = field(default_factory=dict)
    at_least: float | None = None

    @property
    def selector(self) -> str:
        matchers = [f'job="{self.job}"', *(f'{k}="{v}"' for k, v in self.labels.items())]
        return f"{self.metric}{{{', '.join(matchers)}}}"

    @property
    def family(self) -> str:
        """The metric as written in the code: a histogram without its _count."""
        return self.metric.removesuffix("_count")


def expected_series(namespace: str) -> list[Expected]:
    """Every series of a stack whose channels carry this namespace prefix."""
    return [*_per_channel(namespace), *_http(), *_per_service()]


def _per_channel(namespace: str) -> Iterator[Expected]:
    for channel in channels.ALL:
        name = namespace + channel.name
        on = {"channel": name}
        sender, receiver = channel.producer, channel.consumer
        yield Expected("msarch_messages_published_total", sender, on, 1)
        yield Expected("msarch_publish_confirms_total", sender, {**on, "outcome": "confirmed"}, 1)
        yield Expected("msarch_publish_confirms_total", sender, {**on, "outcome": "failed"})
        yield Expected("msarch_messages_consumed_total", receiver, {**on, "outcome": "ok"}, 1)
        yield Expected("msarch_message_handling_seconds_count", receiver, on, 1)
        yield Expected("msarch_consumer_lag", receiver, on)
        yield Expected("msarch_dead_letters", "store", {"channel": channel.name})


def _http() -> Iterator[Expected]:
    for service in SERVICES:
        yield Expected("msarch_http_requests_total", service, {"route": "/metrics"}, 1)
        yield Expected("msarch_http_request_seconds_count", service, {"route": "/metrics"}, 1)
    for service in ("gateway", "roundtrip"):
        yield Expected("msarch_http_requests_total", service, {"status": "202"}, 1)
        yield Expected("msarch_http_requests_total", service, {"status": "422"}, 1)
    for service in ("gateway", "batch"):
        yield Expected("msarch_http_requests_total", service, {"status": "200"}, 1)


def _per_service() -> Iterator[Expected]:
    yield Expected("msarch_websocket_clients", "websocket", at_least=1)
    for histogram in ("msarch_batch_size_items_count", "msarch_batch_duration_seconds_count"):
        yield Expected(histogram, "batch", {"outcome": "Done"}, 1)
    scripts = {"store": ("store_key_value", "stage_items"), "batch": ("request_batch",)}
    for service, names in scripts.items():
        for script in names:
            yield Expected("msarch_redis_script_seconds_count", service, {"script": script}, 1)


def metric_names(expr: str) -> set[str]:
    """The msarch metrics a PromQL expression reads."""
    return set(METRIC_NAME.findall(expr))
