"""A minimal HTTP/1.1 client over one keep-alive connection, for load generation.

One shared httpx.AsyncClient collapses to ~450 req/s at 32 concurrent requests
on a 2-core machine (its pool costs more than the request); this one does only
what the load needs: POST a JSON body, read the status line, the headers, and a
content-length or chunked body.
"""

import asyncio
import contextlib
from dataclasses import dataclass

MAX_HEADER_BYTES = 64 * 1024


@dataclass(frozen=True)
class Response:
    status: int
    headers: dict[str, str]
    """Lower-cased names."""
    body: bytes


class KeepAliveConnection:
    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        reader, writer = self._reader, self._writer
        # A keep-alive connection the server closed while idle (a restart) is opened again.
        if reader is None or writer is None or writer.is_closing() or reader.at_eof():
            await self.close()
            reader, writer = await asyncio.open_connection(self.host, self.port)
            self._reader, self._writer = reader, writer
        return reader, writer

    async def post_json(self, path: str, body: bytes) -> Response:
        reader, writer = await self._connect()
        writer.write(
            f"POST {path} HTTP/1.1\r\nhost: {self.host}:{self.port}\r\n"
            f"content-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n".encode()
            + body
        )
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        if len(head) > MAX_HEADER_BYTES:
            raise ValueError("response headers too large")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        status = int(status_line.split(" ", 2)[1])
        headers: dict[str, str] = {}
        for line in header_lines:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        if headers.get("transfer-encoding", "").lower() == "chunked":
            content = await _read_chunked(reader)
        else:
            content = await reader.readexactly(int(headers.get("content-length", "0")))
        if headers.get("connection", "").lower() == "close":
            await self.close()
        return Response(status, headers, content)

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(OSError):
                await self._writer.wait_closed()
        self._reader = self._writer = None


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    parts: list[bytes] = []
    while True:
        size = int((await reader.readline()).split(b";", 1)[0].strip(), 16)
        if size == 0:
            while (await reader.readline()) not in (b"\r\n", b""):
                pass  # trailers
            return b"".join(parts)
        parts.append(await reader.readexactly(size))
        await reader.readexactly(2)
