"""One DDP worker: ``torchrun ... -m smaf.launch SPEC.json`` (started by ``run_training``).

``SPEC.json``: ``{"stage": <name in smaf.stages.registry.TRAINING_STAGES>, "log": <log file or null>,
"kwargs": {...}}``. Every process joins the process group, then calls the stage function with
``kwargs``. Rank 0 logs to the rule's log file (and stderr); the other ranks log warnings and
errors to stderr with their rank, so a failure on any rank is visible. A SmafError becomes
one line and exit status 1, as in a one-process run.

It can also be run by hand, e.g. on a node with 4 GPUs:
``torchrun --standalone --nproc_per_node=4 -m smaf.launch spec.json``.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

from smaf import distributed
from smaf.errors import SmafError
from smaf.runner import configure_logging, user_message
from smaf.stages.registry import TRAINING_STAGES


def main(argv: list[str] | None = None) -> int:
    """Run the spec's stage in this process; return the exit status."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: torchrun --nproc_per_node=N -m smaf.launch SPEC.json", file=sys.stderr)
        return 2
    spec = json.loads(Path(args[0]).read_text())
    func = TRAINING_STAGES.get(spec.get("stage"))
    if func is None:
        known = ", ".join(TRAINING_STAGES)
        print(f"smaf.launch: unknown stage {spec.get('stage')!r} (known: {known})", file=sys.stderr)
        return 2
    ctx = distributed.init_from_env()
    if ctx.is_main:
        configure_logging(spec.get("log"))
    else:
        logging.basicConfig(
            level=logging.WARNING,
            format=f"%(asctime)s %(levelname)s [rank {ctx.rank}] %(name)s: %(message)s",
            datefmt="%H:%M:%S",
            force=True,
        )
    log = logging.getLogger("smaf.launch")
    try:
        func(**spec["kwargs"])
    except SmafError as exc:
        log.error("%s", user_message(exc))
        return 1
    except Exception:
        log.exception("unexpected error on rank %d (a bug in SMAF, please report it)", ctx.rank)
        return 1
    finally:
        distributed.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
