"""Reading a child process's output without ever blocking the test on it: a thread reads each pipe
to its end (so the child never stalls on a full pipe), and the test waits for a line with a deadline.
A process that prints nothing, or stops half-way through a line, fails the test in bounded time."""

from __future__ import annotations

import queue
import threading
import time
from typing import IO


class LineReader:
    """Every line of `stream`, read on a daemon thread; the stream is closed when it ends."""

    def __init__(self, stream: IO[str], name: str) -> None:
        self._lines: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        self._ended = False
        self._thread = threading.Thread(target=self._read, args=(stream,), name=f"read-{name}", daemon=True)
        self._thread.start()

    def _read(self, stream: IO[str]) -> None:
        try:
            for line in stream:
                self._lines.put(line)
        except (OSError, ValueError):
            pass  # the pipe went away under us: that is its end too
        finally:
            self._lines.put(None)
            stream.close()

    def _next(self, deadline: float) -> str | None:
        """The next line, or None at the end of the stream; AssertionError at the deadline."""
        if self._ended:
            return None
        try:
            line = self._lines.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            raise TimeoutError from None
        if line is None:
            self._ended = True
            return None
        self.seen.append(line)
        return line

    def wait_for(self, marker: str, *, timeout: float, what: str) -> str:
        """Everything read so far, once a line containing `marker` has arrived. Raises AssertionError
        when `timeout` seconds pass first, or the stream ends first (the process exited)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._next(deadline)
            except TimeoutError:
                raise AssertionError(
                    f"timed out after {timeout} s waiting for {what}; read so far: {self.text()!r}"
                ) from None
            if line is None:
                raise AssertionError(f"the output ended before {what}; read: {self.text()!r}")
            if marker in line:
                return self.text()

    def rest(self, *, timeout: float) -> str:
        """Everything, once the stream has ended; AssertionError if it is still open after `timeout`."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                if self._next(deadline) is None:
                    return self.text()
            except TimeoutError:
                raise AssertionError(f"the output was still open after {timeout} s") from None

    def text(self) -> str:
        """What has been read so far (from the queue into `seen`)."""
        return "".join(self.seen)

    def drain(self) -> str:
        """Move whatever the thread has read into `seen` without waiting; return all of it."""
        while not self._ended:
            try:
                line = self._lines.get_nowait()
            except queue.Empty:
                break
            if line is None:
                self._ended = True
            else:
                self.seen.append(line)
        return self.text()
