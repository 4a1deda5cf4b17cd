"""Benchmark kit: a fast stand-in provider, a low-overhead load generator and a LiteLLM proxy runner.

- `scripts.benchkit.provider`: an OpenAI-compatible chat-completions stand-in (plain and SSE), run as
  its own process, costing a few microseconds of CPU per request.
- `scripts.benchkit.loadgen`: a closed-loop HTTP/1.1 keep-alive load generator (library and CLI that
  prints one JSON line), meant to run in its own process so its CPU is not charged to the targets.
- `scripts.benchkit.litellm_proxy`: builds a cached LiteLLM virtual environment under `.bench/` and
  runs its proxy (no database, master key) in front of a provider, for comparison.

- `scripts.benchkit.floor_server`: the architecture's floor (Envoy in front of an empty gRPC server).
- `scripts.benchkit.matrix`: measures targets point by point (CPU from /proc, the load in its own process).

Only the standard library is required; uvloop is used when installed.
"""

from __future__ import annotations

import asyncio


def install_uvloop() -> bool:
    """Makes uvloop the event loop policy when it is installed; returns whether it is."""
    try:
        import uvloop
    except ImportError:
        return False
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return True
