"""Fail when `generated/` is not exactly what `make proto` builds from `proto/` (run by `make lint`)."""

from __future__ import annotations

import filecmp
import sys
import tempfile
from pathlib import Path

from scripts.generate_protos import OUT, generate


def files(root: Path) -> set[str]:
    return {
        str(path.relative_to(root))
        for path in root.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }


def main() -> None:
    with tempfile.TemporaryDirectory() as scratch:
        fresh = Path(scratch)
        generate(fresh)
        expected, committed = files(fresh), files(OUT)
        stale = sorted(
            name for name in expected & committed if not filecmp.cmp(fresh / name, OUT / name, shallow=False)
        )
        missing, extra = sorted(expected - committed), sorted(committed - expected)
    if stale or missing or extra:
        for label, names in (("differs", stale), ("missing", missing), ("not generated", extra)):
            for name in names:
                print(f"generated/{name}: {label}", file=sys.stderr)
        sys.exit("generated/ is out of step with proto/: run `make proto` and commit the result")
    print(f"generated/ is in step with proto/ ({len(expected)} files)")


if __name__ == "__main__":
    main()
