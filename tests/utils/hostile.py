"""Hostile HTTP probes: requests sent byte for byte as written, and what came back.

An HTTP client library would normalise a hostile request before sending it (re-encode the path,
refuse a control character in a header), which is exactly what a fuzzer must not do, so a probe
is written to the socket as it is. Each probe has a connection of its own, closed after the
answer, so a dropped connection is seen as one: the socket ends without a status line.
"""

import asyncio
import base64
import contextlib
import os
import re
import socket
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from urllib.parse import urlsplit

_STATUS = re.compile(rb"HTTP/1\.[01] (\d{3}) ")
DROPPED = 0
"""The status of a probe whose connection ended (or timed out) before a status line came."""

BYTES = [f"%{b:02X}" for b in range(256)]
"""Every byte, percent-encoded."""
MALFORMED = [
    "%C0%80", "%C0%AF", "%E0%80%AF", "%F0%80%80%AF", "%F8%88%80%80%80",  # overlong UTF-8
    "%FF", "%FE%FF", "%ED%A0%80", "%ED%BF%BF", "%E2%82", "%F4%90%80%80",  # invalid UTF-8
    "%", "%G0", "%%", "%0", "%u0000", "%25%30%30",  # broken and double escapes
    "..", "%2E%2E", "..%2F..%2F..%2Fetc%2Fpasswd", "%2F", "%5C", ";", "*", "~",
    "-1", "0", "1e309", "NaN", "Infinity", "0x10", "9" * 40, "-" + "9" * 40,
    "18446744073709551616-0", "99999999999999999999-0", "0-18446744073709551616", "1-",
    "x" * 8192, "%00" * 512,
]  # fmt: skip
"""Encodings and values that parsers get wrong: overlong and invalid UTF-8, broken escapes,
traversal, numbers beyond every range, oversized parts."""
VALUES = BYTES + MALFORMED


@dataclass(frozen=True)
class Probe:
    method: str
    target: str
    headers: tuple[tuple[bytes, bytes], ...] = ()
    body: bytes = b""
    why: str = ""

    def encode(self, host: str) -> bytes:
        head = [
            f"{self.method} {self.target} HTTP/1.1".encode("ascii"),
            f"Host: {host}".encode("ascii"),
            b"Connection: close",
        ]
        names = {name.lower() for name, _ in self.headers}
        if self.body and b"content-type" not in names:
            head.append(b"Content-Type: application/json")
        if self.body or self.method in ("POST", "PUT", "PATCH"):
            head.append(b"Content-Length: %d" % len(self.body))
        head.extend(name + b": " + value for name, value in self.headers)
        return b"\r\n".join(head) + b"\r\n\r\n" + self.body


@dataclass
class Findings:
    """What a run of probes got: every status seen, and the probes that got a 5xx or nothing."""

    probes: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    bad: list[tuple[int, Probe]] = field(default_factory=list)

    def add(self, status: int, probe: Probe) -> None:
        self.probes += 1
        self.statuses[status] = self.statuses.get(status, 0) + 1
        if status == DROPPED or status >= 500:
            self.bad.append((status, probe))

    def report(self, limit: int = 12) -> str:
        return "\n".join(
            f"{'dropped' if status == DROPPED else status}: {probe.method} {probe.target[:120]} "
            f"{probe.why}"
            for status, probe in self.bad[:limit]
        )


async def send(host: str, port: int, probe: Probe, timeout_s: float = 30.0) -> int:
    """The status the server answered `probe` with, or DROPPED."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout_s)
    except (OSError, TimeoutError):
        return DROPPED
    try:
        writer.write(probe.encode(f"{host}:{port}"))
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), timeout_s)  # until the server closes
    except (OSError, TimeoutError):
        return DROPPED
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    return final_status(answer)


def final_status(answer: bytes) -> int:
    """The status of the final answer in `answer` (after any 100 Continue), or DROPPED."""
    while match := _STATUS.match(answer):
        status = int(match.group(1))
        if status >= 200:
            return status
        _, _, answer = answer.partition(b"\r\n\r\n")
    return DROPPED


def address_of(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    if parts.hostname is None or parts.port is None:
        raise ValueError(f"{url} names no host and port")
    return parts.hostname, parts.port


async def run(url: str, probes: Iterable[Probe], concurrency: int = 8) -> Findings:
    """Send every probe to the server at `url`, `concurrency` at a time."""
    host, port = address_of(url)
    findings = Findings()
    queue: Iterator[Probe] = iter(probes)

    async def worker() -> None:
        for probe in queue:  # one iterator shared by the workers: each probe is sent once
            findings.add(await send(host, port, probe), probe)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return findings


@dataclass(frozen=True)
class Route:
    """A route to fuzz: a path with `{}` where its parameter goes (if it has one), the names of
    its query parameters, and a body that the route takes (so only the mutation is wrong)."""

    method: str
    path: str
    query: tuple[str, ...] = ()
    body: bytes = b""
    sample: str = "1"
    """A valid value of the path parameter, used while the query or headers are mutated."""

    def target(self, value: str | None = None) -> str:
        return self.path.format(self.sample if value is None else value)


def probes_of(route: Route, headers: bool = False) -> Iterator[Probe]:
    """Every mutation of `route`'s path and query, and with `headers` of its headers too (a
    service reads the headers of every route in the same way: once per service is enough)."""
    probe = Probe(route.method, route.target(), body=route.body)
    if "{}" in route.path:
        for value in VALUES:
            yield Probe(route.method, route.target(value), body=route.body, why="path")
    else:
        for value in VALUES:
            yield Probe(route.method, route.path + value, body=route.body, why="path suffix")
    for name in (*route.query, "x"):
        for value in VALUES:
            target = f"{probe.target}?{name}={value}"
            yield Probe(route.method, target, body=route.body, why=f"query {name}")
        repeated = "&".join(f"{name}={v}" for v in ("1", "2", "-1", "", "x"))
        yield Probe(route.method, f"{probe.target}?{repeated}", body=route.body, why="repeated")
    many = "&".join(f"{name}={i}" for name in (*route.query, "x") for i in range(500))
    yield Probe(route.method, f"{probe.target}?{many}", body=route.body, why="1000s of params")
    if headers:
        yield from _header_probes(probe)


def _header_probes(probe: Probe) -> Iterator[Probe]:
    for byte in range(256):
        if byte in (0x0A, 0x0D):
            continue  # a line break ends the header: the next line is then another header
        value = b"a" + bytes([byte]) + b"b"
        for name in (b"X-Request-Id", b"X-Fuzz"):
            yield Probe(probe.method, probe.target, ((name, value),), probe.body, "header")
    oversized: list[tuple[tuple[bytes, bytes], ...]] = [
        ((b"X-Fuzz", b"x" * 65536),),
        ((b"X-Request-Id", b"r" * 8192),),
        tuple((b"X-Fuzz-%d" % i, b"v") for i in range(500)),
        ((b"Content-Type", b"application/json; charset=\xff"),),
        ((b"Content-Type", b"multipart/form-data; boundary="),),
        ((b"Content-Encoding", b"gzip"),),
        ((b"Accept", b"*/*;q=NaN"),),
        ((b"X-Api-Key", b"\x00"),),
        ((b"Cookie", b"a=" + b"%00" * 1000),),
        ((b"Expect", b"100-continue"),),
        ((b"Range", b"bytes=99999999999999999999-"),),
    ]
    for headers in oversized:
        yield Probe(probe.method, probe.target, headers, probe.body, "header set")


class StalledSocket:
    """A websocket client that reads nothing after its handshake (a receive buffer of
    `rcvbuf` bytes), then on request reads what reached it: written by hand, because a client
    library reads for its user in the background."""

    def __init__(self, url: str, rcvbuf: int = 4096) -> None:
        self.url = url
        self.rcvbuf = rcvbuf
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def __aenter__(self) -> "StalledSocket":
        host, port = address_of(self.url.replace("ws://", "http://", 1))
        raw = socket.socket()
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.rcvbuf)
        raw.setblocking(False)
        await asyncio.get_running_loop().sock_connect(raw, (host, port))
        self.reader, self.writer = await asyncio.open_connection(sock=raw, limit=2**24)
        key = base64.b64encode(os.urandom(16)).decode()
        path = urlsplit(self.url).path or "/"
        self.writer.write(
            f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), 10)
        if not head.startswith(b"HTTP/1.1 101"):
            raise ConnectionError(f"no websocket at {self.url}: {head[:80]!r}")
        self.reader._transport.pause_reading()  # type: ignore[attr-defined]  # reads nothing
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(OSError):
                await self.writer.wait_closed()

    async def drain(self, quiet_s: float = 5.0) -> tuple[int, int, str]:
        """Read every frame that reached it: (frames, their payload bytes, how it ended): "close
        <code> <reason>" (a close frame), "reset" or "eof" (the server cut the connection), or
        "open" (nothing for `quiet_s`)."""
        assert self.reader is not None
        self.reader._transport.resume_reading()  # type: ignore[attr-defined]
        frames = size = 0
        try:
            while True:
                first, second = await asyncio.wait_for(self.reader.readexactly(2), quiet_s)
                length = second & 0x7F
                if length == 126:
                    length = int.from_bytes(await self.reader.readexactly(2))
                elif length == 127:
                    length = int.from_bytes(await self.reader.readexactly(8))
                payload = await self.reader.readexactly(length)
                if first & 0x0F == 0x8:  # close: a 2-byte code, then the reason
                    code = int.from_bytes(payload[:2])
                    return frames, size, f"close {code} {payload[2:].decode()}"
                frames, size = frames + 1, size + length
        except TimeoutError:
            return frames, size, "open"
        except asyncio.IncompleteReadError:
            return frames, size, "eof"
        except OSError:
            return frames, size, "reset"
