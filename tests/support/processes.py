"""Which local process owns a TCP connection, read from /proc (Linux): to kill the one replica that
is in the middle of a call."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path


def _inodes_with_local_port(port: int) -> set[str]:
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local_port = int(fields[1].rsplit(":", 1)[1], 16)
            if local_port == port:
                inodes.add(fields[9])
    return inodes


def owner_of_local_port(port: int, candidates: Iterable[int]) -> int | None:
    """The pid among `candidates` holding a TCP socket bound locally to `port`, if any."""
    inodes = {f"socket:[{inode}]" for inode in _inodes_with_local_port(port)}
    for pid in candidates:
        try:
            descriptors = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for descriptor in descriptors:
            try:
                if os.readlink(f"/proc/{pid}/fd/{descriptor}") in inodes:
                    return pid
            except OSError:
                continue
    return None
