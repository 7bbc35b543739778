"""Where a benchmark's JSON results go, with the versions and machine that produced them."""

from __future__ import annotations

import json
import platform
from pathlib import Path

import torch


def write_results(out: Path, rows: list[dict], **meta) -> None:
    """Write {"meta": meta + torch version + machine, "rows": rows} to `out` and say so."""
    meta |= {"torch": torch.__version__, "machine": platform.processor() or platform.machine()}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    print(f"wrote {out}")
