"""The marked sections of BENCHMARKS.md that the benchmark scripts rewrite (cpu.py, gpu.py)."""

from __future__ import annotations

from collections.abc import Sequence


def markers(name: str) -> tuple[str, str]:
    """The start and end markers of section ``name`` (``<!-- bench:NAME:start -->``, ...)."""
    return f"<!-- bench:{name}:start -->", f"<!-- bench:{name}:end -->"


def replace_section(text: str, name: str, heading: str, body: Sequence[str]) -> str:
    """``text`` with the lines between section ``name``'s markers replaced by ``body``.

    Without both markers a new section (``heading``, then the markers around ``body``) is
    appended.
    """
    start, end = markers(name)
    block = "\n".join([start, *body, end])
    if start in text and end in text:
        return text[: text.index(start)] + block + text[text.index(end) + len(end) :]
    return text.rstrip() + f"\n\n{heading}\n\n{block}\n"
