"""A training run for tests/test_distributed.py: one process, or one of N under torchrun.

Trains the real classifier (ResNet38d at width 0.125, EPS head) with the real EPS loss on
random images for a few steps through :func:`smaf.train.fit`, and writes (rank 0) the loss
history and a fingerprint of the final weights as JSON. ``--no-dropout`` switches b6/b7's
dropout off and ``--freeze-bn`` freezes BN: then one process and N processes with the same
global batch must follow the same trajectory (per-process dropout masks and BN statistics
are the two things DDP cannot share).

    python tests/ddp_worker.py OUT.json [options]
    python -m torch.distributed.run --standalone --nproc_per_node=2 tests/ddp_worker.py OUT.json
"""

from __future__ import annotations

import argparse
import json
import os
import signal

import numpy as np
import torch

from smaf import distributed
from smaf.models.build import ModelConfig, build_classifier
from smaf.stages.pretrain import PretrainConfig, eps_step
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


def sigterm_at(step_fn, call):
    """step_fn that, on rank 0's ``call``-th call, SIGTERMs the whole process group (torchrun
    and every worker), as SLURM does at a time limit or on preemption."""
    calls = []

    def step(model, batch, device):
        calls.append(1)
        if len(calls) == call and distributed.is_main():
            os.killpg(os.getpgid(0), signal.SIGTERM)
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
    ap.add_argument(
        "--sigterm-at", type=int, default=None, help="rank 0 sends SIGTERM to its process group"
    )
    args = ap.parse_args()

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
    )
    step = eps_step(PretrainConfig())
    if args.sigterm_at is not None:
        step = sigterm_at(step, args.sigterm_at)
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
