"""`msarch up`'s infrastructure step returns what it found; the CLI side prints it.

Nothing listens on the free ports used here, so nothing of the machine's is touched.
"""

import pytest

from msarch import up
from msarch.infrastructure import Infrastructure, Started, Unreachable, provide_infrastructure
from msarch.settings import Settings, redacted
from msarch.testing.isolation import free_port


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("amqp://guest:s3cret@127.0.0.1:5672/", "amqp://guest:***@127.0.0.1:5672/"),
        ("redis://:s3cret@redis:6379/0", "redis://:***@redis:6379/0"),
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        ("nats://127.0.0.1:4222", "nats://127.0.0.1:4222"),
        ("nats://s3cr3t-token@nats:4222", "nats://***@nats:4222"),
        (
            "amqp://u:p1@rabbitmq1:5672/, amqp://u:p2@rabbitmq2:5672/",
            "amqp://u:***@rabbitmq1:5672/,amqp://u:***@rabbitmq2:5672/",
        ),
    ],
)
def test_a_password_is_never_shown(url: str, shown: str) -> None:
    assert redacted(url) == shown


async def test_unreachable_servers_are_reported_not_printed_and_nothing_exits(
    capsys: pytest.CaptureFixture[str],
) -> None:
    settings = Settings(
        broker_url=f"amqp://guest:s3cret@127.0.0.1:{free_port()}/",
        redis_url=f"redis://127.0.0.1:{free_port()}/0",
        embedded=False,
    )
    found = await provide_infrastructure(settings)
    assert capsys.readouterr() == ("", "")
    assert not found.usable
    assert (found.embedded, found.started, found.settings) == (None, [], settings)
    assert [u.name for u in found.unreachable] == ["broker", "redis"]
    assert "MSARCH_BROKER_URL" in found.unreachable[0].hint


async def test_unreachable_sentinels_are_reported_and_no_redis_is_embedded_for_them() -> None:
    sentinels = f"127.0.0.1:{free_port()},127.0.0.1:{free_port()}"
    settings = Settings(
        broker_url=f"amqp://guest:guest@127.0.0.1:{free_port()}/",
        redis_sentinels=sentinels,
        embedded=True,
    )
    found = await provide_infrastructure(settings)
    assert (found.embedded, found.started) == (None, [])
    redis = next(u for u in found.unreachable if u.name == "redis")
    assert redis.url == sentinels
    assert "MSARCH_REDIS_SENTINELS" in redis.hint


def test_the_cli_side_prints_one_line_each_with_passwords_hidden(
    capsys: pytest.CaptureFixture[str],
) -> None:
    settings = Settings()
    found = Infrastructure(
        settings,
        started=[
            Started(
                "redis_url",
                "Redis",
                "redis://:pw@127.0.0.1:6379/0",
                "Redis",
                "redis://127.0.0.1:6380/0",
                ".msarch/redis, AOF fsync always",
            )
        ],
        unreachable=[Unreachable("broker", "amqp://u:pw@mq:5672/", "refused", "start it")],
    )
    up.report(found)
    out, err = capsys.readouterr()
    assert out == (
        "msarch: no Redis at redis://:***@127.0.0.1:6379/0; started Redis at "
        "redis://127.0.0.1:6380/0 (data in .msarch/redis, AOF fsync always)\n"
    )
    assert err == "msarch: cannot reach broker at amqp://u:***@mq:5672/ (refused): start it\n"
