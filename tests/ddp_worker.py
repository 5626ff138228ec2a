"""A training run for the tests that need a process of its own: one process, or one of N
under torchrun (tests/test_distributed.py, tests/test_train_process.py).

Trains the real classifier (ResNet38d at width 0.125, EPS head) with the real EPS loss on
random images for a few steps through :func:`smaf.train.fit`, and writes (rank 0) the loss
history and a fingerprint of the final weights as JSON; progress lines go to stderr.
``--no-dropout`` switches b6/b7's dropout off and ``--freeze-bn`` freezes BN: then one process
and N processes with the same global batch must follow the same trajectory (per-process
dropout masks and BN statistics are the two things DDP cannot share). ``--signal-at``,
``--pause-at`` and ``--workers`` make it a trainer to interrupt, to lock out, or with
DataLoader worker processes.

    python tests/ddp_worker.py OUT.json [options]
    python -m torch.distributed.run --standalone --nproc_per_node=2 tests/ddp_worker.py OUT.json
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import time
from pathlib import Path

import numpy as np
import torch

from smaf import distributed
from smaf.models.build import ModelConfig, build_classifier
from smaf.settings import PretrainSettings
from smaf.stages.pretrain import eps_step
from smaf.train import LoopConfig, OptimConfig, build_optimizer, fit


class RandomSaliencySet(torch.utils.data.Dataset):
    """Images, labels and saliency that depend only on (index, augmentation seed)."""

    def __len__(self) -> int:
        return 7

    def __getitem__(self, item):
        index, seed = item
        g = np.random.default_rng(seed)
        image = torch.from_numpy(g.normal(size=(3, 32, 32)).astype(np.float32))
        image[index % 3] += 1.0
        labels = torch.zeros(3)
        labels[index % 3] = 1
        saliency = torch.from_numpy((g.random((32, 32)) > 0.5).astype(np.float32))
        return {"image": image, "labels": labels, "saliency": saliency}


def signal_at(step_fn, call, signum):
    """step_fn that, on rank 0's ``call``-th call, sends ``signum`` as a terminal's Ctrl-C
    (SIGINT) or SLURM (SIGTERM at a time limit or on preemption) would: to its own process
    group (the trainer and its DataLoader workers) and, under torchrun, to torchrun, which
    passes it to every worker (they run in sessions of their own)."""
    calls = []

    def step(model, batch, device):
        calls.append(1)
        if len(calls) == call and distributed.is_main():
            if distributed.context().enabled:
                os.kill(os.getppid(), signum)
            os.killpg(os.getpgid(0), signum)
        return step_fn(model, batch, device)

    return step


def pause_at(step_fn, call, ready):
    """step_fn that, on its ``call``-th call, creates the file ``ready`` and sleeps (holding
    the state folder) until the test kills the process."""
    calls = []

    def step(model, batch, device):
        calls.append(1)
        if len(calls) == call:
            Path(ready).touch()
            time.sleep(600)
        return step_fn(model, batch, device)

    return step


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--accum", type=int, default=1)
    ap.add_argument("--no-dropout", action="store_true")
    ap.add_argument("--freeze-bn", action="store_true")
    ap.add_argument("--state-dir", default=None)
    ap.add_argument("--stop-after", type=int, default=None)
    ap.add_argument("--compile", action="store_true", help="torch.compile (train.compile)")
    ap.add_argument("--signal-at", type=int, default=None, help="rank 0 signals its group")
    ap.add_argument("--signal-name", choices=["TERM", "INT"], default="TERM")
    ap.add_argument("--pause-at", type=int, default=None, help="touch --ready, then sleep")
    ap.add_argument("--ready", default=None)
    ap.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")
    args = ap.parse_args()

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    distributed.init_from_env()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = build_classifier(
        ModelConfig(width=0.125, head="eps", num_classes=3, freeze_bn=args.freeze_bn)
    )
    if args.no_dropout:
        for m in model.modules():
            if isinstance(m, torch.nn.Dropout2d):
                m.p = 0.0
    optim = OptimConfig(lr=0.05, momentum=0.9)
    loop = LoopConfig(
        iterations=args.steps,
        batch_size=args.batch,
        grad_accum=args.accum,
        checkpoint_every=2,
        log_every=1,
        device="cpu",
        seed=5,
        compile=args.compile,
        num_workers=args.workers,
    )
    step = eps_step(PretrainSettings())
    if args.signal_at is not None:
        step = signal_at(step, args.signal_at, signal.Signals[f"SIG{args.signal_name}"])
    if args.pause_at is not None:
        step = pause_at(step, args.pause_at, args.ready)
    history = fit(
        model,
        build_optimizer(model.param_groups(), optim),
        RandomSaliencySet(),
        step,
        loop,
        optim,
        args.state_dir,
        {"worker": 1},
        stop_after=args.stop_after,
    )
    weights = torch.cat([p.detach().flatten() for p in model.parameters()])
    if distributed.is_main():
        result = {
            "world_size": distributed.context().world_size,
            "history": history,
            "weights_sum": float(weights.double().sum()),
            "weights_abs_sum": float(weights.double().abs().sum()),
        }
        with open(args.out, "w") as f:
            json.dump(result, f)
    distributed.shutdown()


if __name__ == "__main__":
    main()
