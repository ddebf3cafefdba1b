"""free_port: the ports the harness and `msarch up` give to the servers they start."""

import random
import socket
from pathlib import Path

import pytest

from msarch.embedded import LOWEST_PORT, free_port


def test_ports_are_below_the_ephemeral_range_and_never_handed_out_twice() -> None:
    start = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    ports = [free_port() for _ in range(200)]
    assert all(LOWEST_PORT <= port < start for port in ports), ports
    assert len(set(ports)) == len(ports)


def test_a_port_something_listens_on_is_passed_over(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as listener, socket.socket() as probe:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        probe.bind(("127.0.0.1", 0))
        taken, free = listener.getsockname()[1], probe.getsockname()[1]
        probe.close()
        picks = iter([taken, taken, free])
        monkeypatch.setattr(random, "randrange", lambda *_: next(picks))
        assert free_port() == free
