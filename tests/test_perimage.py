"""The per-image stage runner (smaf.perimage): skip by identity, journal, fingerprint, shards."""

from __future__ import annotations

import json
from pathlib import Path

from smaf.perimage import Journal, run_per_image
from smaf.staging import FINGERPRINT, JOURNAL, gather_shards, merge_counts, shard_names

IDS = ["a", "b", "c", "d", "e"]


class Stage:
    """A stage whose per-image output is ``<id>.txt`` holding the id's current identity."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.identities = {i: f"v1-{i}" for i in IDS}
        self.calls: list[str] = []

    def fn(self, image_id: str, root: Path) -> int:
        self.calls.append(image_id)
        (root / f"{image_id}.txt").write_text(self.identities[image_id])
        return len(image_id)

    def run(self, ids=IDS, settings=1, shard=None, work="work", out="out"):
        self.calls.clear()
        return run_per_image(
            ids,
            self.fn,
            out=self.tmp / out,
            work_dir=self.tmp / work,
            fingerprint={"settings": settings, "shard": str(shard)},
            identity=self.identities.__getitem__,
            outputs=["{id}.txt"],
            shard=shard,
            manifest="stage.json",
            name="test",
        )

    def run_in_place(self, out: Path):
        """Without a staging folder: the output folder itself resumes."""
        self.calls.clear()
        return run_per_image(
            IDS,
            self.fn,
            out=out,
            work_dir=None,
            fingerprint={},
            identity=self.identities.__getitem__,
            outputs=["{id}.txt"],
        )


def test_a_changed_identity_recomputes_only_that_image(tmp_path) -> None:
    stage = Stage(tmp_path)
    run = stage.run()
    assert run.computed == 5 and run.results == [1] * 5
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == [*(f"{i}.txt" for i in IDS), "stage.json"]
    assert json.loads((out / "stage.json").read_text())["computed"] == 5

    # A published folder is no staging folder: a new run starts from scratch there.
    assert not (tmp_path / "work").exists()
    assert stage.run().computed == 5

    # Without a staging folder the output folder itself resumes, by identity.
    (tmp_path / "keep").mkdir()
    run = stage.run_in_place(tmp_path / "keep")
    assert run.computed == 5
    stage.identities["d"] = "v2-d"
    again = stage.run_in_place(tmp_path / "keep")
    assert again.computed == 1 and stage.calls == ["d"]
    assert (tmp_path / "keep" / "d.txt").read_text() == "v2-d"
    # An output that is gone is redone even though the journal has it.
    (tmp_path / "keep" / "a.txt").unlink()
    stage.run_in_place(tmp_path / "keep")
    assert stage.calls == ["a"]


def test_staging_resumes_by_identity_and_settings_change_starts_over(tmp_path) -> None:
    stage = Stage(tmp_path)
    # Shard 1of2 left in its staging folder (as a killed or not yet gathered run leaves it).
    stage.run(ids=IDS[:3], shard="1of2", work="w1")
    assert not (tmp_path / "out").exists()
    assert (tmp_path / "w1" / FINGERPRINT).is_file() and (tmp_path / "w1" / JOURNAL).is_file()
    stage.identities["b"] = "v2-b"  # the photo was replaced
    assert stage.run(ids=IDS[:3], shard="1of2", work="w1").computed == 1
    assert stage.calls == ["b"]
    # An image added to the shard costs one image, not the shard.
    stage.run(ids=IDS[:4], shard="1of2", work="w1")
    assert stage.calls == ["d"]
    # An image gone from the shard is not published with it.
    stage.run(ids=IDS[1:4], shard="1of2", work="w1")
    assert stage.calls == [] and not (tmp_path / "w1" / "a.txt").exists()
    # Other settings: everything is redone.
    assert stage.run(ids=IDS[1:4], settings=2, shard="1of2", work="w1").computed == 3


def test_a_torn_journal_line_is_ignored(tmp_path) -> None:
    stage = Stage(tmp_path)
    stage.run(ids=IDS, shard="1of1", work="w")
    journal = tmp_path / "w" / JOURNAL
    lines = journal.read_text().splitlines()
    assert [json.loads(x)["id"] for x in lines] == IDS
    journal.write_text("\n".join(lines[:-1]) + "\n" + lines[-1][:9])  # killed mid-write
    assert Journal(tmp_path / "w").done == {i: f"v1-{i}" for i in IDS[:-1]}
    assert stage.run(ids=IDS, shard="1of1", work="w").computed == 1
    assert stage.calls == [IDS[-1]]
    assert Journal(tmp_path / "w").done == {i: f"v1-{i}" for i in IDS}  # next line intact


def test_shards_gather_into_one_folder(tmp_path) -> None:
    from smaf.staging import shard_ids

    stage = Stage(tmp_path)
    works = [tmp_path / "state" / s for s in shard_names(3)]
    for shard, work in zip(shard_names(3), works, strict=True):
        run = stage.run(ids=shard_ids(IDS, shard), shard=shard, work=f"state/{shard}")
        assert stage.calls == shard_ids(IDS, shard)
        assert run.root == work
    merged = gather_shards(works, {"": tmp_path / "out"}, "stage.json", merge_counts)
    assert merged["images"] == 5 and merged["shards"] == 3
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == [*(f"{i}.txt" for i in IDS), "stage.json"]  # no journal, no fingerprint
    assert not any(w.exists() for w in works)


def test_outputs_named_like_the_bookkeeping_files_do_not_delete_them(tmp_path) -> None:
    """Per-image outputs ``{id}.json`` beside ``.staging.json`` and the manifest ``stage.json``:
    resuming keeps the fingerprint, journal and manifest (pruning took them for stale outputs
    of images named ``.staging`` and ``stage``, so every resume started over)."""

    def fn(image_id: str, root: Path) -> None:
        calls.append(image_id)
        (root / f"{image_id}.json").write_text("{}")

    def run(ids):
        return run_per_image(
            ids,
            fn,
            out=tmp_path / "out",
            work_dir=tmp_path / "work",
            fingerprint={"settings": 1, "shard": "1of2"},
            identity=str,
            outputs=["{id}.json"],
            shard="1of2",
            manifest="stage.json",
        )

    calls: list[str] = []
    run(IDS[:3])
    work = tmp_path / "work"
    assert (work / FINGERPRINT).is_file() and (work / "stage.json").is_file()
    calls.clear()
    run(IDS[:3])
    assert calls == []  # resumed: nothing recomputed
    assert (work / FINGERPRINT).is_file() and (work / JOURNAL).is_file()
