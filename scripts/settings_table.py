"""Print the README's configuration table from `server/settings.py` (paste it under "Configuration")."""

from __future__ import annotations

from server.settings import documented_variables


def table() -> str:
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for name, default, doc in documented_variables():
        rows.append(f"| `{name}` | {f'`{default}`' if default else '—'} | {doc} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(table())
