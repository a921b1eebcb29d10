"""A markdown table of finished runs, from their summary.json files.

python -m dstrl.analysis.table runs/hc100k/*
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def load_summaries(run_dirs: list[Path]) -> list[dict]:
    """summary.json of every given run directory; a clear error for one that has none."""
    summaries = []
    for run in run_dirs:
        path = run / "summary.json"
        if not path.exists():
            raise FileNotFoundError(f"{run} has no summary.json (is the run finished?)")
        summaries.append(json.loads(path.read_text()))
    return summaries


def markdown_table(summaries: list[dict]) -> str:
    """One row per run: return and LCA over seeds, and size and cost relative to dense."""
    lines = [
        "| env | algo | seeds | steps | final return | LCA | params | train FLOPs | steps/s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for s in summaries:
        final, lca = s["final_return"], s["lca"]
        lines.append(
            f"| {s['env']} | {s['algo']} | {len(s['seeds'])} | {s['steps']:,} "
            f"| {final['mean']:.0f} ± {final['std']:.0f} | {lca['mean']:.3f} ± {lca['std']:.3f} "
            f"| {s['params']['ratio']:.3f}x ({s['params']['total']:,}) "
            f"| {s['flops']['train_ratio']:.3f}x | {s['env_steps_per_second']:.0f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args:
        print("usage: python -m dstrl.analysis.table RUN_DIR...", file=sys.stderr)
        return 2
    try:
        print(markdown_table(load_summaries([Path(a) for a in args])))
    except FileNotFoundError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
