"""msarch.embedded keeps what `msarch up` started running: a server that keeps dying is started
again after a pause that doubles, and the user sees its last log lines.

The "server" is a small Python process on a free port that says a line, listens for a moment
and exits with code 1, as a server that crashes soon after it starts would.
"""

import asyncio
import re
import sys
from pathlib import Path

from msarch.embedded import Embedded, Server
from msarch.testing.isolation import free_port
from msarch.testing.stack import wait_for

CRASHING = """
import socket, sys, time
listener = socket.socket()
listener.bind(("127.0.0.1", int(sys.argv[1])))
listener.listen()
print("crashing server: out of disk space", flush=True)
time.sleep(0.3)
sys.exit(1)
"""


async def test_a_server_that_keeps_dying_waits_1_then_2_s_and_shows_its_last_lines(
    tmp_path: Path,
) -> None:
    port = free_port()
    output = tmp_path / "crashing.out"
    embedded = Embedded(tmp_path)
    server = Server("Crashing", [sys.executable, "-c", CRASHING, str(port)], port, output, output)
    embedded.servers.append(server)
    await server.start()
    said: list[str] = []
    watching = asyncio.create_task(embedded.supervise(said.append))
    try:
        await wait_for(lambda: sum(" is back" in line for line in said) >= 3, 20)
    finally:
        await embedded.stop()
        await watching
    stops = [line for line in said if re.search(r" stopped( again)? \(", line)]
    first = f"embedded Crashing on port {port} stopped (exit code 1); starting it again on the"
    assert stops[0] == f"{first} same data", "the first death: started again at once"
    assert re.fullmatch(
        rf"embedded Crashing on port {port} stopped again \(exit code 1\); starting it again in "
        rf"1 s\. Its last lines \({re.escape(str(output))}\):",
        stops[1],
    )
    assert stops[2].endswith(f"starting it again in 2 s. Its last lines ({output}):")
    assert "  crashing server: out of disk space" in said
    backs = [line for line in said if " is back" in line]
    assert all(
        re.fullmatch(rf"embedded Crashing on port {port} is back, [\d.]+ s after it stopped", b)
        for b in backs
    ), backs
