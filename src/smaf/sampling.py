"""The endless, stateless, shardable sample stream every training loop draws from."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from smaf.errors import SmafError


class SampleStream(torch.utils.data.Sampler):
    """Endless stream of ``(dataset index, augmentation seed)`` from stream position ``start``.

    Position ``p``: epoch ``p // n``, index ``perm(seed, epoch)[p % n]``, seed ``(seed, p)``
    folded to 63 bits. Stateless, so resuming only needs the position.

    Data parallel: the stream is cut into global micro-batches of ``chunk`` positions (from
    ``start``, a multiple of ``chunk``); process ``rank`` of ``world`` yields the ``rank``-th
    ``chunk // world`` positions of each, so the processes together see the one-process stream.
    """

    def __init__(
        self, n: int, seed: int, start: int = 0, *, rank: int = 0, world: int = 1, chunk: int = 1
    ) -> None:
        if n < 1:
            raise SmafError("the training split is empty.")
        if world < 1 or not 0 <= rank < world or chunk % world:
            raise ValueError(f"bad shard: rank {rank} of {world}, chunk {chunk}")
        self.n, self.seed, self.start = n, seed, start
        self.rank, self.world, self.chunk = rank, world, chunk

    def _mine(self, p: int) -> bool:
        local = self.chunk // self.world
        return ((p - self.start) % self.chunk) // local == self.rank

    def __iter__(self) -> Iterator[tuple[int, int]]:
        p = self.start
        epoch, perm = -1, None
        while True:
            if self.world > 1 and not self._mine(p):
                p += 1
                continue
            if p // self.n != epoch:
                epoch = p // self.n
                perm = np.random.default_rng([self.seed, epoch]).permutation(self.n)
            aug_seed = int(
                np.random.SeedSequence([self.seed, p]).generate_state(2, np.uint64)[0] >> 1
            )
            yield int(perm[p % self.n]), aug_seed
            p += 1
