"""The VOC evaluation server's submission archive of test predictions (rule deeplab_submission)."""

from __future__ import annotations

import logging
import os
import shutil
import tarfile
import tempfile
from pathlib import Path

from smaf.data.index import DatasetIndex, read_index
from smaf.errors import DataError
from smaf.io import atomic_write, default_mode, load_mask, save_mask

log = logging.getLogger(__name__)

#: Where the VOC evaluation server expects segmentation results ("comp6": trained with data
#: beyond VOC — ImageNet, SBD), relative to the archive root.
SUBMISSION_SUBDIR = "results/VOC2012/Segmentation/comp6_test_cls"


def make_submission(
    pred_dir: str | os.PathLike[str],
    index: DatasetIndex | str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    out_tar: str | os.PathLike[str],
    role: str = "test",
) -> int:
    """Lay test predictions out for the VOC evaluation server and pack them as ``.tar.gz``.

    ``out_dir/results/VOC2012/Segmentation/comp6_test_cls/<id>.png`` (palette PNGs, values
    0..C) for every image of split ``role`` of the (test) index; the archive holds exactly those files, under the same
    relative paths, with fixed owner and time stamps (same predictions → same bytes).
    Both outputs are replaced atomically.

    Returns:
        The number of images.

    Raises:
        DataError: a prediction is missing or holds a value outside 0..C (255 is refused:
            the server scores every pixel).
    """
    index = read_index(index)
    ids = index.ids(role)
    num_classes = index.num_classes
    pred_dir, out_dir = Path(pred_dir), Path(out_dir)
    missing = [i for i in ids if not (pred_dir / f"{i}.png").is_file()]
    if missing:
        raise DataError(
            f"{len(missing)} of {len(ids)} test predictions are missing from {pred_dir} "
            f"(first: {missing[0]}.png)."
        )
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    stage.chmod(default_mode(directory=True))  # it becomes out_dir
    try:
        dest = stage / SUBMISSION_SUBDIR
        for image_id in ids:
            mask = load_mask(pred_dir / f"{image_id}.png")
            top = int(mask.max(initial=0))
            if top > num_classes:
                raise DataError(
                    f"prediction {pred_dir / image_id}.png holds label {top} > C = {num_classes}."
                )
            save_mask(dest / f"{image_id}.png", mask)  # re-encoded: always a VOC palette PNG
        with atomic_write(out_tar) as tmp, tarfile.open(tmp, "w:gz") as tar:
            for image_id in ids:
                member = f"{SUBMISSION_SUBDIR}/{image_id}.png"
                tar.add(stage / member, arcname=member, filter=_reproducible)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(stage, out_dir)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    log.info("submission: %d images -> %s, %s", len(ids), out_dir, out_tar)
    return len(ids)


def _reproducible(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mtime = 0
    info.mode = 0o644
    return info
