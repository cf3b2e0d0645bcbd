"""Print the tables of a `bench.serving` result file as Markdown, for docs/benchmarks.md.

python -m bench.markdown runs/bench/serving.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

CELL_COLUMNS = (
    ("target", "target"),
    ("task", "task"),
    ("size", "image_size"),
    ("batching", "batching"),
    ("concurrency", "concurrency"),
    ("req/s", "throughput"),
    ("p50 ms", "p50_ms"),
    ("p95 ms", "p95_ms"),
    ("p99 ms", "p99_ms"),
    ("req/s / (a)", ("ratio_to_limit", "throughput")),
    ("p50 / (a)", ("ratio_to_limit", "p50")),
    ("p95 / (a)", ("ratio_to_limit", "p95")),
    ("p99 / (a)", ("ratio_to_limit", "p99")),
    ("errors", "errors"),
    ("load", "load_average_1m"),
)


def _value(cell: dict[str, Any], key: str | tuple[str, str]) -> str:
    value = cell.get(key[0], {}).get(key[1]) if isinstance(key, tuple) else cell.get(key)
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.2f}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)


def cells_table(cells: list[dict[str, Any]]) -> str:
    lines = [
        "| " + " | ".join(title for title, _ in CELL_COLUMNS) + " |",
        "| " + " | ".join("---" for _ in CELL_COLUMNS) + " |",
    ]
    for cell in cells:
        lines.append("| " + " | ".join(_value(cell, key) for _, key in CELL_COLUMNS) + " |")
    return "\n".join(lines)


def targets_table(targets: list[dict[str, Any]]) -> str:
    lines = ["| target | measured | bound | met |", "| --- | --- | --- | --- |"]
    for check in targets:
        measured = "-" if check["measured"] is None else f"{check['measured']:.3f}"
        met = {True: "yes", False: "**no**", None: "not measured"}[check["met"]]
        lines.append(f"| {check['name']} | {measured} | {check['target']} | {met} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("result", type=Path, help="JSON file written by python -m bench.serving")
    document = json.loads(parser.parse_args().result.read_text(encoding="utf-8"))
    print(cells_table(document["cells"]))
    if document["sweep"]:
        print()
        print(cells_table(document["sweep"]))
    print()
    print(targets_table(document["targets"]))


if __name__ == "__main__":
    main()
