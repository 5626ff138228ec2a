"""The layers of docs/ARCHITECTURE.md hold: every module of src/smaf is named in its diagram,
and no module imports one of a higher layer (imports read with ``ast``, function-level and
``TYPE_CHECKING`` ones included, so nothing is imported)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
DOC = SRC.parent / "docs" / "ARCHITECTURE.md"

#: The diagram of ARCHITECTURE.md's "Layers" section, lowest first. A row is a layer; a row of
#: several groups (the stages and what stands beside them) lets a module import its own group
#: and the layers below, not the other groups of its row. A name covers its subpackages.
LAYERS: list[dict[str, tuple[str, ...]]] = [
    {
        "base": (
            "smaf",
            "smaf.errors",
            "smaf.io",
            "smaf.progress",
            "smaf.config",
            "smaf.provenance",
            "smaf.settings",
            "smaf.sam_settings",
            "smaf.runner",
            "smaf.transforms",
            "smaf.archives",
            "smaf.download",
            "smaf.codehash",
        )
    },
    {"data": ("smaf.data",)},
    {"models": ("smaf.models",)},
    {
        "method": (
            "smaf.cam",
            "smaf.fusion",
            "smaf.losses",
            "smaf.crf",
            "smaf.metrics",
            "smaf.clip",
            "smaf.sam",
        )
    },
    {
        "train": (
            "smaf.train",
            "smaf.optim",
            "smaf.sampling",
            "smaf.checkpointing",
            "smaf.interrupts",
            "smaf.distributed",
            "smaf.perimage",
            "smaf.staging",
            "smaf.inference",
        )
    },
    {
        "stages": ("smaf.stages",),
        "predict": ("smaf.predict", "smaf.export"),
        "report": ("smaf.report",),
        "saliency": ("smaf.saliency",),
    },
    {"entry": ("smaf.cli", "smaf.launch", "smaf.experiments", "smaf.refinements")},
]

#: Imports that go up today (none: the planner's settings left the stages, smaf.settings;
#: what predict shared with the stages moved down: smaf.staging, smaf.perimage, smaf.inference).
KNOWN_VIOLATIONS: set[tuple[str, str]] = set()


def _modules() -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its ``__init__.py``)."""
    out = {}
    for path in sorted((SRC / "smaf").rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _imports(name: str, path: Path) -> set[str]:
    """The ``smaf`` modules ``name`` imports anywhere in its file."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            for alias in node.names:  # `from smaf.data import sources`: the module itself
                sub = f"{base}.{alias.name}"
                found.add(sub if sub in MODULES else base)
    return {m for m in found if m in MODULES}


def _place(module: str) -> tuple[int, str]:
    """(layer, group) of ``module``: the longest name of :data:`LAYERS` that covers it."""
    best: tuple[int, int, str] | None = None
    for layer, groups in enumerate(LAYERS):
        for group, names in groups.items():
            for n in names:
                covers = module == n or (n != "smaf" and module.startswith(n + "."))
                if covers and (best is None or len(n) > best[0]):
                    best = (len(n), layer, group)
    assert best is not None, f"{module} is in no layer of LAYERS: add it (and to the diagram)"
    return best[1], best[2]


def _layer_section() -> str:
    text = DOC.read_text()
    start = text.index("## Layers")
    end = text.index("\n## ", start + 1)
    return text[start:end]


def test_every_module_is_named_in_the_layer_diagram():
    section = _layer_section()
    missing = [
        m
        for m in MODULES
        if m not in section and not re.search(rf"\b{re.escape(m.rpartition('.')[2])}\b", section)
    ]
    assert not missing, f"docs/ARCHITECTURE.md's layer diagram does not name {missing}"


def test_the_layers_here_are_the_diagrams_in_its_order():
    """Each layer's first name stands in the diagram below the previous layer's."""
    section = _layer_section()
    firsts = [next(iter(groups.values()))[0] for groups in LAYERS]
    positions = [re.search(rf"{re.escape(n)}(?![\w.])", section).start() for n in firsts]
    assert positions == sorted(positions), firsts


def test_no_module_imports_a_higher_layer_or_a_neighbour_group():
    wrong = set()
    for module, path in MODULES.items():
        layer, group = _place(module)
        for target in _imports(module, path):
            t_layer, t_group = _place(target)
            if t_layer > layer or (t_layer == layer and t_group != group):
                wrong.add((module, target))
    unexpected = sorted(wrong - KNOWN_VIOLATIONS)
    assert not unexpected, f"imports that go up (or across a row) in the layers: {unexpected}"


def test_the_import_reader_sees_function_level_and_relative_imports(tmp_path):
    path = tmp_path / "x.py"
    path.write_text(
        "from smaf.data import sources\n"
        "def f():\n"
        "    import smaf.stages.seeds\n"
        "    from . import losses\n"
        "    from .models import build\n"
    )
    assert _imports("smaf.cam", path) == {
        "smaf.data.sources",
        "smaf.stages.seeds",
        "smaf.losses",
        "smaf.models.build",
    }
    assert _place("smaf.data.sources.voc") == (1, "data")
    assert _place("smaf.export") == (5, "predict")
