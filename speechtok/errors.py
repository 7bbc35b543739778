"""One shape for error messages about a file: what could not be done, to which file, and why, on one line.

    cannot load codec from models/my-dmel: config.json has invalid JSON (JSONDecodeError: ...)
    cannot read token file out/a.npz: codes are float32, not integers (corrupt or foreign file)

A message starts with what failed rather than with a path, so the problem is not pushed off the
end of the line by a long path, and reads the same whichever module raised it.
"""

from __future__ import annotations

from pathlib import Path


def cannot(action: str, path: str | Path, problem: str) -> str:
    """'cannot {action} {path}: {problem}', e.g. cannot("read token file", p, "file does not exist")."""
    return f"cannot {action} {path}: {problem}"


def problem_of(message: str, path: str | Path) -> str:
    """The problem part of a `cannot(..., path, ...)` message (for a per-file report that lists the
    path in its own column); any other message unchanged."""
    head, sep, problem = message.partition(f" {path}: ")
    return problem if sep and head.startswith("cannot ") else message
