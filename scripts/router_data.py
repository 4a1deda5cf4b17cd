"""Check the router's labelled data: `python -m scripts.router_data check FILE...`; and
`python -m scripts.router_data dedupe --keep HELD_OUT TRAIN...` to drop from the training files
every item that is the same task as a held-out item, or as an earlier training item (the held-out
set is never edited: it is only compared against).

Each line is one chat request (OpenAI `messages`, optional `tools` and `response_format`) with its
tier, language, topic and shape features. The check reports schema errors, tier balance, language
and feature shares, and near-duplicates: pairs whose final user turns share most of their word and
character shingles (MinHash candidates, then exact Jaccard), within and across the files given.
It exits non-zero when anything is wrong.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import zlib
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TIERS = ("SIMPLE", "MEDIUM", "COMPLEX", "REASONING")
FEATURES = {"system", "json", "multiturn", "tools", "image", "long", "terse"}
ROLES = {"system", "user", "assistant", "tool"}
#: Two final turns whose shingles overlap this much are the same task.
NEAR_DUPLICATE = 0.6
HASHES = 48
BANDS = 16


@dataclass(frozen=True)
class Item:
    source: str
    line: int
    row: dict[str, Any]

    @property
    def where(self) -> str:
        return f"{self.source}:{self.line} ({self.row.get('id', '?')})"


def final_text(row: dict[str, Any]) -> str:
    """The text of the last user turn."""
    last = row["messages"][-1]
    content = last.get("content")
    if isinstance(content, str):
        return content
    return " ".join(p.get("text", "") for p in content or [] if isinstance(p, dict))


def load(path: Path) -> tuple[list[Item], list[str]]:
    items: list[Item] = []
    errors: list[str] = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            errors.append(f"{path}:{number}: not JSON ({error})")
            continue
        item = Item(str(path), number, row)
        errors += [f"{item.where}: {problem}" for problem in problems(row)]
        items.append(item)
    return items, errors


def problems(row: dict[str, Any]) -> list[str]:
    found = []
    if row.get("tier") not in TIERS:
        found.append(f"tier {row.get('tier')!r}")
    if not isinstance(row.get("language"), str) or not re.fullmatch(r"[a-z]{2}", row["language"]):
        found.append(f"language {row.get('language')!r}")
    if not isinstance(row.get("topic"), str) or not row["topic"]:
        found.append("topic missing")
    if not set(row.get("features", [])) <= FEATURES:
        found.append(f"unknown features {set(row.get('features', [])) - FEATURES}")
    messages = row.get("messages")
    if not isinstance(messages, list) or not messages:
        return [*found, "messages missing"]
    if any(not isinstance(m, dict) or m.get("role") not in ROLES for m in messages):
        found.append("a message has no known role")
    elif messages[-1]["role"] != "user":
        found.append("the final message is not the user's")
    elif not final_text(row).strip():
        found.append("the final user turn has no text")
    if "tools" in row and not isinstance(row["tools"], list):
        found.append("tools is not a list")
    return found


def shingles(text: str) -> set[str]:
    words = re.findall(r"\w+", text.lower())
    grams = {" ".join(words[i : i + 3]) for i in range(max(len(words) - 2, 1))}
    squeezed = re.sub(r"\s+", " ", text.lower()).strip()
    grams |= {squeezed[i : i + 5] for i in range(max(len(squeezed) - 4, 1))}
    return grams


def signature(grams: set[str]) -> tuple[int, ...]:
    hashed = [zlib.crc32(g.encode()) for g in grams]
    return tuple(
        min(((h ^ (seed * 0x9E3779B1)) * 2654435761) & 0xFFFFFFFF for h in hashed) for seed in range(HASHES)
    )


def near_duplicates(items: list[Item]) -> list[tuple[float, Item, Item]]:
    grams = [shingles(final_text(item.row)) for item in items]
    rows = HASHES // BANDS
    buckets: dict[tuple[int, tuple[int, ...]], list[int]] = defaultdict(list)
    for index, gram in enumerate(grams):
        sig = signature(gram)
        for band in range(BANDS):
            buckets[(band, sig[band * rows : (band + 1) * rows])].append(index)
    pairs: set[tuple[int, int]] = set()
    for members in buckets.values():
        for i, a in enumerate(members):
            pairs.update((a, b) for b in members[i + 1 :])
    found = []
    for a, b in pairs:
        union = len(grams[a] | grams[b])
        score = len(grams[a] & grams[b]) / union if union else 1.0
        if score >= NEAR_DUPLICATE:
            found.append((score, items[a], items[b]))
    return sorted(found, key=lambda f: -f[0])


def report(items: list[Item]) -> list[str]:
    """Shares and balance; the lines returned are what is wrong."""
    wrong = []
    tiers = Counter(item.row["tier"] for item in items)
    print(f"{len(items)} items: " + ", ".join(f"{t} {tiers[t]}" for t in TIERS))
    if len({tiers[t] for t in TIERS}) > 1:
        wrong.append(f"tiers are not balanced: {dict(tiers)}")
    languages = Counter(item.row["language"] for item in items)
    other = sum(n for lang, n in languages.items() if lang != "en")
    print(
        f"not English: {other / len(items):.1%} in {len(languages) - ('en' in languages)} languages: "
        + ", ".join(f"{lang} {n}" for lang, n in languages.most_common())
    )
    ids = Counter(item.row.get("id") for item in items)
    wrong += [f"id {i!r} appears {n} times" for i, n in ids.items() if n > 1]
    for tier in TIERS:
        rows = [item.row for item in items if item.row["tier"] == tier]
        shares = Counter(f for row in rows for f in set(row.get("features", [])))
        print(
            f"  {tier:>9}: " + ", ".join(f"{f} {shares[f] / max(len(rows), 1):.0%}" for f in sorted(FEATURES))
        )
    return wrong


def dedupe(keep: Path, files: list[Path]) -> None:
    kept, _ = load(keep)
    items: list[Item] = []
    for path in files:
        items += load(path)[0]
    order = {(item.source, item.line): index for index, item in enumerate(items)}
    dropped: set[tuple[str, int]] = set()
    for _, a, b in near_duplicates(kept + items):
        if a.source == str(keep) and b.source == str(keep):
            continue
        if b.source == str(keep) or (
            a.source != str(keep) and order[(a.source, a.line)] > order[(b.source, b.line)]
        ):
            a, b = b, a
        # `a` stays (held out, or the earlier training item); `b` goes.
        if (a.source, a.line) not in dropped:
            dropped.add((b.source, b.line))
    for path in files:
        lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
        gone = {line for source, line in dropped if source == str(path)}
        path.write_text(
            "".join(text for number, text in enumerate(lines, 1) if number not in gone), encoding="utf-8"
        )
        print(f"{path}: dropped {len(gone)} of {len(lines)}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("command", choices=["check", "dedupe"])
    parser.add_argument("--keep", type=Path, help="dedupe: the set compared against, never edited")
    parser.add_argument("files", nargs="+", type=Path)
    args = parser.parse_args()
    if args.command == "dedupe":
        dedupe(args.keep, args.files)
        return
    items: list[Item] = []
    errors: list[str] = []
    for path in args.files:
        loaded, problems_found = load(path)
        items += loaded
        errors += problems_found
    for error in errors:
        print(error)
    valid = [item for item in items if not problems(item.row)]
    errors += report(valid) if valid else ["no valid items"]
    duplicates = near_duplicates(valid)
    for score, a, b in duplicates:
        print(f"near-duplicate ({score:.2f}): {a.where} ~ {b.where}")
        print(f"    {final_text(a.row)[:100]!r}\n    {final_text(b.row)[:100]!r}")
    print(f"{len(errors)} problems, {len(duplicates)} near-duplicate pairs")
    sys.exit(1 if errors or duplicates else 0)


if __name__ == "__main__":
    main()
