"""Bad input files end a stage with one line naming the file and the fix (no traceback)."""

from __future__ import annotations

import multiprocessing

import numpy as np
import pytest
from helpers import index_dataset
from PIL import Image
from test_stages_train import AUG, LOOP, MODEL

from smaf.data.index import DatasetIndex
from smaf.io import load_image, load_mask
from smaf.runner import run_logged
from smaf.settings import PretrainSettings
from smaf.stages.pretrain import pretrain


def _prepare(root, idx):
    """The dataset stage on ``root`` with image labels from the masks (VOC adapter)."""
    return index_dataset(root, idx, source="voc", label_source="masks")


def _error_lines(stderr: str) -> list[str]:
    """The ERROR lines of a stage's log output, and every line that follows one."""
    lines = stderr.splitlines()
    start = next((i for i, line in enumerate(lines) if " ERROR " in line), len(lines))
    return lines[start:]


def test_corrupt_jpeg_stops_training_with_one_line_naming_it(tiny_root, tmp_path, capfd):
    index = _prepare(tiny_root, tmp_path / "index")
    first = DatasetIndex.read(index).ids("train_aug")[0]
    jpg = tiny_root / "JPEGImages" / f"{first}.jpg"
    jpg.write_bytes(jpg.read_bytes()[:200])  # truncated
    out = tmp_path / "pretrain"
    with pytest.raises(SystemExit) as exit_info:
        # threads=2: the image is read in a DataLoader worker, whose traceback torch puts
        # into the exception's message; the log line must still be the one-line reason.
        run_logged(
            None,
            pretrain,
            index=index,
            model=MODEL,
            settings=PretrainSettings.from_dict({"method": "eps", **LOOP, "augment": AUG}),
            out_model=out / "model.pt",
            out_history=out / "history.csv",
            state_dir=out / "state",
            threads=2,
        )
    assert exit_info.value.code == 1
    (line,) = _error_lines(capfd.readouterr().err)  # one line, nothing after it
    assert str(jpg) in line and "corrupt or truncated" in line and "Traceback" not in line
    assert not (out / "model.pt").exists()
    # The DataLoader workers are gone: they ignore SIGTERM, so one left behind would keep the
    # failed job's process from exiting (multiprocessing joins its children at exit).
    assert multiprocessing.active_children() == []


@pytest.mark.parametrize("content", [b"", b"not an image at all", "truncated"])
def test_corrupt_image_or_mask_file_is_named(tiny_root, content):
    jpg = sorted((tiny_root / "JPEGImages").glob("*.jpg"))[0]  # a train_aug image, with a mask
    png = tiny_root / "SegmentationClass" / f"{jpg.stem}.png"
    for path, reader in ((jpg, load_image), (png, load_mask)):
        data = path.read_bytes()[:100] if content == "truncated" else content
        path.write_bytes(data)
        with pytest.raises(Exception, match=str(path.name)) as info:
            reader(path)
        assert type(info.value).__name__ == "DataError"


def test_bad_input_mask_values_outside_0_to_c_and_255(tiny_root, tmp_path):
    png = sorted((tiny_root / "SegmentationClass").glob("*.png"))[0]
    mask = np.array(Image.open(png))
    mask[:4, :4] = 77  # C = 6: neither a class nor the 255 ignore label
    Image.fromarray(mask).save(png)
    with pytest.raises(Exception, match=rf"{png.stem}.*77|77.*{png.stem}") as info:
        _prepare(tiny_root, tmp_path / "index")
    assert type(info.value).__name__ == "DataError"
    assert not (tmp_path / "index" / "dataset.json").exists()
    assert not (tmp_path / "index" / "index.csv").exists()


def test_bad_input_missing_split_list_is_named(tiny_root, tmp_path):
    (tiny_root / "ImageSets" / "Segmentation" / "val.txt").unlink()
    with pytest.raises(Exception, match="val.txt") as info:
        _prepare(tiny_root, tmp_path / "index")
    assert type(info.value).__name__ == "DataError"
    assert not (tmp_path / "index").exists()
