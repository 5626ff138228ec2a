"""Workflow scripts that run no network start without importing torch.

Importing torch costs 2-4 s of CPU per job on a laptop or CI core; a run has many small jobs
(a confusion matrix per shard, gathers, summaries, figures from saved maps), so a stray import
of a network module there made half the jobs of a tiny run mostly import time. Each script
here is either light (its imports, run in a fresh interpreter, leave ``torch`` out of
``sys.modules``) or named as running a network; a new script must be put in one of the two.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parents[1] / "workflow" / "scripts"

#: Scripts that run a network (or decode with one) and so import torch.
NETWORK = {
    "clip_maps.py",
    "deeplab_predict.py",
    "deeplab_train.py",
    "figure_scales.py",
    "predict.py",
    "pretrain.py",
    "saliency.py",
    "sam_masks.py",
    "seeds.py",
    "self_train.py",
    "teacher_maps.py",
    "thr_auto.py",
    "thr_sweep.py",
}


def _imports(script: Path) -> str:
    """The module-level import statements of ``script`` as source."""
    tree = ast.parse(script.read_text())
    nodes = [n for n in tree.body if isinstance(n, ast.Import | ast.ImportFrom)]
    return "\n".join(ast.unparse(n) for n in nodes)


def test_every_script_is_light_or_named_as_running_a_network():
    names = {p.name for p in SCRIPTS.glob("*.py")}
    assert NETWORK <= names, f"no longer scripts: {sorted(NETWORK - names)}"
    light = sorted(names - NETWORK)
    assert {"evaluate_shard.py", "summary.py", "gather_seeds.py", "figure_labels.py"} <= set(light)
    code = "\n".join(_imports(SCRIPTS / name) for name in light)
    check = f"{code}\nimport sys\nprint(sorted(m for m in ('torch', 'torchvision') if m in sys.modules))"
    out = subprocess.run(
        [sys.executable, "-c", check], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]", f"the light scripts {light} import {out.strip()}"


def test_the_check_sees_a_script_that_imports_torch(tmp_path):
    """The import reader keeps what matters: a network module reached from a script's import."""
    script = tmp_path / "x.py"
    script.write_text('"""doc"""\n\nfrom smaf.stages.seeds import make_seeds\n\nmake_seeds()\n')
    code = _imports(script) + "\nimport sys\nprint('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"
