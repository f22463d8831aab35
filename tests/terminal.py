"""A CLI process in a pseudo-terminal, driven like a user at the keyboard (no pexpect needed).

with PtyProcess(["interactive"], env=env, cwd=tmp_path) as term:
    term.expect("threatintel> ")
    term.send("8.8.8.8")
    term.expect("harmless")
    term.send_eof()
    assert term.wait() == 0
"""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Self

#: Makes the pty the process's controlling terminal (getpass opens /dev/tty), then runs the CLI.
#: Done in the child itself: a preexec_fn is unsafe while the test's simulator thread runs.
_AS_TERMINAL_USER = (
    "import fcntl, sys, termios; fcntl.ioctl(0, termios.TIOCSCTTY, 0); "
    "sys.argv = ['threatintel', *sys.argv[1:]]; "
    "from threatintel.cli import main; main()"
)
#: The longest a test waits for text it expects; reaching it fails the test, it is no timing.
EXPECT_TIMEOUT = 30.0


class PtyProcess:
    """``threatintel ARGS`` with a terminal (80 columns) as stdin, stdout and stderr; TERM is
    dumb unless ``env`` sets it."""

    def __init__(self, args: list[str], *, env: dict[str, str], cwd: Path) -> None:
        self.master, slave = pty.openpty()
        os.set_blocking(self.master, True)
        import fcntl
        import struct
        import termios

        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 80, 0, 0))
        full_env = {k: v for k, v in os.environ.items()} | {"TERM": "dumb"} | env
        full_env.pop("COLUMNS", None)
        self.process = subprocess.Popen(
            [sys.executable, "-c", _AS_TERMINAL_USER, *args],
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env=full_env,
            cwd=cwd,
            start_new_session=True,
        )
        os.close(slave)
        self.output = ""
        self._mark = 0  # where the next expect starts looking

    def expect(self, text: str, timeout: float = EXPECT_TIMEOUT) -> str:
        """Read until ``text`` has appeared since the previous expect's match (as pexpect
        does: a prompt seen before the last command does not count again); everything read so
        far is in ``output``."""
        deadline = time.monotonic() + timeout
        while (found := self.output.find(text, self._mark)) < 0:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"never saw {text!r}; the terminal showed:\n{self.output}")
            ready, _, _ = select.select([self.master], [], [], left)
            if ready and not self._read():
                raise AssertionError(f"exited before {text!r}; the terminal showed:\n{self.output}")
        self._mark = found + len(text)
        return self.output

    def send(self, line: str) -> None:
        os.write(self.master, line.encode() + b"\r")

    def send_raw(self, data: str) -> None:
        os.write(self.master, data.encode())

    def send_eof(self) -> None:
        os.write(self.master, b"\x04")

    def wait(self, timeout: float = EXPECT_TIMEOUT) -> int:
        """The exit code, once the rest of the output is read."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.master], [], [], 0.1)
            if ready and not self._read():
                break
            if not ready and self.process.poll() is not None:
                break
        return self.process.wait(timeout=max(0.1, deadline - time.monotonic()))

    def _read(self) -> bool:
        try:
            data = os.read(self.master, 65536)
        except OSError:  # EIO: the other side closed
            return False
        self.output += data.decode("utf-8", "replace").replace("\r\n", "\n")
        return bool(data)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        os.close(self.master)
