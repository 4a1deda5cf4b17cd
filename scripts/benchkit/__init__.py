"""Benchmark kit: a fast stand-in provider, a low-overhead load generator and a LiteLLM proxy runner.

- `scripts.benchkit.provider`: an OpenAI-compatible chat-completions stand-in (plain and SSE), run as
  its own process, costing a few microseconds of CPU per request.
- `scripts.benchkit.loadgen`: a closed-loop HTTP/1.1 keep-alive load generator (library and CLI that
  prints one JSON line), meant to run in its own process so its CPU is not charged to the targets.
- `scripts.benchkit.litellm_proxy`: builds a cached LiteLLM virtual environment under `.bench/` and
  runs its proxy (no database, master key) in front of a provider, for comparison.

Only the standard library is required; uvloop is used when installed.
"""
