"""Markdown table of a `python -m bench` (bench/run_all.py) JSON file (the tables of docs/benchmarks.md).

python -m bench.report runs/bench/all.json"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

NAMES = {
    "vision": "vision AnalyzeImage",
    "audio": "audio AnalyzeAudio (no ASR)",
    "text": "text AnalyzeText",
    "analyze": "fusion Analyze (image+audio+text)",
}


def _cell(row: dict[str, Any], key: str, digits: int = 1) -> str:
    value = row.get(key)
    return "–" if value is None else f"{value:.{digits}f}"


def markdown(results: dict[str, Any]) -> str:
    lines = [
        "| target | concurrency | gRPC req/s | gRPC p50 / p95 / p99 ms | in-process req/s "
        "| in-process p50 / p95 / p99 ms | p50 gRPC ÷ in-process | throughput in-process ÷ gRPC "
        "| n (gRPC / in-process) |",
        "|---|---:|---:|---|---:|---|---:|---:|---|",
    ]
    for cell in results["cells"]:
        remote, local = cell["grpc"], cell["in_process"]
        lines.append(
            f"| {NAMES.get(cell['target'], cell['target'])} | {cell['concurrency']} | {_cell(remote, 'per_s')} | "
            f"{_cell(remote, 'p50_ms')} / {_cell(remote, 'p95_ms')} / {_cell(remote, 'p99_ms')} | "
            f"{_cell(local, 'per_s')} | "
            f"{_cell(local, 'p50_ms')} / {_cell(local, 'p95_ms')} / {_cell(local, 'p99_ms')} | "
            f"{cell['p50_grpc_over_in_process']} | {cell['throughput_in_process_over_grpc']} | "
            f"{remote['requests']}{'+' + str(remote['errors']) + ' errors' if remote.get('errors') else ''} / "
            f"{local['requests']} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    print(markdown(json.loads(Path(args[0]).read_text())), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
