"""A loopback server that speaks just enough RESP to answer every command with garbage.

    async with GarbageRedis(lambda command: INTEGER) as server:
        cache = RedisCache(server.url, ...)        # every data command now gets ":42"

Connection set-up (HELLO, CLIENT, SELECT, AUTH, PING) gets a sane answer so the client connects
(redis-py speaks RESP3, so HELLO gets a map naming protocol 3); every
other command gets what ``reply(command_name)`` returns, raw RESP bytes, so a test decides per
command (a lock script that answers oddly while GETRANGE misses, say). ``commands`` records the
names received. It stands in for a broken or hostile Redis: nothing our code may do with its
answers is anything but "the store is unavailable" or a miss.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from types import TracebackType
from typing import Final, Self

#: Connection set-up the client needs answered before it sends anything of ours.
SETUP_COMMANDS: Final = frozenset({"HELLO", "CLIENT", "SELECT", "AUTH", "PING"})

OK: Final = b"+OK\r\n"
HELLO: Final = b"%2\r\n$6\r\nserver\r\n$5\r\nredis\r\n$5\r\nproto\r\n:3\r\n"
NIL: Final = b"$-1\r\n"
EMPTY: Final = b"$0\r\n\r\n"
ZERO: Final = b":0\r\n"

#: Garbage a real Redis never sends to our commands, by name (ids for parametrized tests).
GARBAGE: Final = {
    "integer": b":42\r\n",
    "negative-integer": b":-7\r\n",
    "huge-integer": b":" + b"9" * 40 + b"\r\n",
    "status": b"+QUEUED\r\n",
    "error": b"-ERR something went wrong\r\n",
    "wrongtype": b"-WRONGTYPE Operation against a key holding the wrong kind of value\r\n",
    "array": b"*3\r\n$2\r\nok\r\n:1\r\n*0\r\n\r\n",
    "nested-array": b"*1\r\n*1\r\n*1\r\n$1\r\nx\r\n",
    "null-array": b"*-1\r\n",
    "not-utf8": b"$4\r\n\xff\xfe\xfd\xfc\r\n",
    "not-a-number": b"$5\r\nhello\r\n",
    "infinity": b"$3\r\ninf\r\n",
    "protocol-violation": b"?what is this\r\n",
    "bad-length": b"$abc\r\n",
}


def huge_bulk(size: int) -> bytes:
    """A bulk string of ``size`` bytes that starts like one of our cache entries would."""
    body = b"TI\x01" + b"\x00" * (size - 3)
    return b"$%d\r\n%s\r\n" % (size, body)


class GarbageRedis:
    """The server; use it with ``async with`` (it listens on 127.0.0.1, a free port)."""

    def __init__(self, reply: Callable[[str], bytes]) -> None:
        self.reply = reply
        self.commands: list[str] = []
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        assert self._server is not None, "start the server first"
        port = self._server.sockets[0].getsockname()[1]
        return f"redis://127.0.0.1:{port}/0"

    async def __aenter__(self) -> Self:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            while (command := await _read_command(reader)) is not None:
                name = command[0].decode("ascii", "replace").upper() if command else ""
                self.commands.append(name)
                if name == "HELLO":
                    writer.write(HELLO)
                else:
                    writer.write(OK if name in SETUP_COMMANDS else self.reply(name))
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client hung up, as it does after a reply it cannot parse
        finally:
            self._connections.discard(task)
            writer.close()


async def _read_command(reader: asyncio.StreamReader) -> list[bytes] | None:
    """One command as the client sends it (an array of bulk strings); None at end of stream."""
    header = await reader.readline()
    if not header:
        return None
    if not header.startswith(b"*"):
        raise ConnectionError("not a RESP command")
    parts = []
    for _ in range(int(header[1:])):
        length = int((await reader.readline())[1:])
        parts.append((await reader.readexactly(length + 2))[:-2])
    return parts
