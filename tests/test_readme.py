"""The README's commands can be copied as they are (issue 15 item 10)."""

from __future__ import annotations

import re
import shlex

from conftest import REPO_ROOT


def _commands() -> list[str]:
    """Every snakemake command line in the README's code blocks (continued lines joined)."""
    text = (REPO_ROOT / "README.md").read_text()
    blocks = re.findall(r"^```[a-z]*\n(.*?)^```", text, flags=re.DOTALL | re.MULTILINE)
    lines = "\n".join(blocks).replace("\\\n", " ").splitlines()
    return [line.split("#")[0] for line in lines if "snakemake " in line]


def test_targets_come_before_configfile_in_every_example() -> None:
    """`--configfile` takes several values: a target after it would be read as a config file."""
    commands = [c for c in _commands() if "--configfile" in c]
    assert commands, "the README has no --configfile example"
    for command in commands:
        words = shlex.split(command)
        after = words[words.index("--configfile") + 1 :]
        values = [
            w for w in after[: next((i for i, w in enumerate(after) if w.startswith("-")), None)]
        ]
        assert values and all(w.endswith((".yaml", ".yml")) for w in values), command
