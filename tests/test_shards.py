"""Sharded stages: shards partition a split, their results gather into the unsharded outputs."""

from __future__ import annotations

import json

import numpy as np
import pytest

from smaf.io import load_mask
from smaf.settings import SeedsSettings
from smaf.stages.crf_stage import gather_crf, refine_seeds
from smaf.stages.evaluate import evaluate_gather, evaluate_split
from smaf.stages.gathers import gather_seeds
from smaf.stages.seeds import make_seeds
from smaf.staging import parse_shard, shard_ids, shard_names

SEEDS = SeedsSettings.from_dict({"scales": [0.5, 1.0], "flip": True, "thr": 0.2})


@pytest.mark.parametrize("n", [1, 2, 3, 7, 10])
def test_shards_partition_the_ids_in_order(n) -> None:
    ids = [f"im{i}" for i in range(7)]
    parts = [shard_ids(ids, s) for s in shard_names(n)]
    assert sum(parts, []) == ids  # every image once, in order
    sizes = [len(p) for p in parts]
    assert max(sizes) - min(sizes) <= 1
    assert shard_ids(ids, None) == ids


def test_bad_shard_names_are_refused() -> None:
    assert parse_shard("2of5") == (2, 5) and parse_shard(None) is None
    for bad in ("0of3", "4of3", "2-of-3"):
        with pytest.raises(ValueError):
            parse_shard(bad)


def test_seeds_crf_and_scores_in_shards_equal_one_run(tiny_index, tiny_model, tmp_path) -> None:
    roles = ["train_aug", "val"]
    whole = tmp_path / "whole"
    make_seeds(tiny_model, tiny_index, roles, whole / "seeds", SEEDS, "cpu")
    refine_seeds(tiny_index, roles, whole / "seeds", whole / "crf")

    # Three shards, the second killed half-way and rerun: the gather equals the single run.
    work = [tmp_path / "state" / s for s in shard_names(3)]
    out = tmp_path / "sharded"
    for shard, w in zip(shard_names(3), work, strict=True):
        make_seeds(
            tiny_model, tiny_index, roles, out / "seeds", SEEDS, "cpu", work_dir=w, shard=shard
        )
    assert not (out / "seeds").exists()  # nothing published before the gather
    (work[1] / "seeds.json").unlink()  # as if killed before its end
    victim = next(work[1].glob("*.png"))
    victim.unlink()
    stats = make_seeds(
        tiny_model,
        tiny_index,
        roles,
        out / "seeds",
        SEEDS,
        "cpu",
        work_dir=work[1],
        shard="2of3",
    )
    assert stats["computed"] == 1  # resumed: only the missing image
    manifest = gather_seeds(work, out / "seeds")
    assert manifest["shards"] == 3
    assert manifest["images"] == len(list((whole / "seeds").glob("*.png")))
    assert not any(w.exists() for w in work)
    _same_folders(whole / "seeds", out / "seeds")
    crf_work = [tmp_path / "crf_state" / s for s in shard_names(2)]
    for shard, w in zip(shard_names(2), crf_work, strict=True):
        refine_seeds(tiny_index, roles, out / "seeds", out / "crf", work_dir=w, shard=shard)
    gather_crf(crf_work, out / "crf")
    _same_folders(whole / "crf", out / "crf")
    one_crf = json.loads((whole / "crf" / "crf.json").read_text())
    two_crf = json.loads((out / "crf" / "crf.json").read_text())
    assert two_crf["changed_fraction"] == pytest.approx(one_crf["changed_fraction"])

    # Scores: the sum of the shards' confusion matrices gives the single run's record.
    record = evaluate_split(whole / "crf", tiny_index, "val")
    confs = [tmp_path / f"conf{k}.npz" for k in (1, 2)]
    for shard, conf in zip(shard_names(2), confs, strict=True):
        evaluate_split(out / "crf", tiny_index, "val", shard=shard, out_conf=conf)
    gathered = evaluate_gather(confs, tiny_index, "val", "SegmentationClass", whole / "crf")
    assert gathered == record


def _same_folders(a, b) -> None:
    pngs = sorted(p.name for p in a.glob("*.png"))
    assert pngs and pngs == sorted(p.name for p in b.glob("*.png"))
    for name in pngs:
        np.testing.assert_array_equal(load_mask(a / name), load_mask(b / name))
    for npz in sorted((a / "maps").glob("*.npz")):
        with np.load(npz) as x, np.load(b / "maps" / npz.name) as y:
            assert x.files == y.files
            for key in x.files:
                np.testing.assert_array_equal(x[key], y[key])
