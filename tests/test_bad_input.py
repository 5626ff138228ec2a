"""Bad input files end a stage with one line naming the file and the fix (no traceback)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from PIL import Image
from test_stages_train import AUG, LOOP, MODEL

from smaf.data.prepare import prepare_dataset
from smaf.data.synthetic import SyntheticConfig, write_dataset
from smaf.io import load_image, load_mask
from smaf.runner import run_logged
from smaf.stages.pretrain import pretrain

ROLES = ("train_aug", "train", "val")


@pytest.fixture()
def dataset(tmp_path):
    root = tmp_path / "VOC2012"
    write_dataset(
        SyntheticConfig(n_train_aug=6, n_train=3, n_val=2, n_test=1, min_size=40, max_size=56), root
    )
    return root


def _prepare(root, idx):
    return prepare_dataset(
        root=root,
        splits={r: r for r in ROLES},
        num_classes=6,
        out_splits={r: idx / f"{r}.txt" for r in ROLES},
        out_labels=idx / "cls_labels.csv",
        out_info=idx / "dataset.json",
        label_source="masks",
    )


def _error_lines(stderr: str) -> list[str]:
    """The ERROR lines of a stage's log output, and every line that follows one."""
    lines = stderr.splitlines()
    start = next((i for i, line in enumerate(lines) if " ERROR " in line), len(lines))
    return lines[start:]


def test_corrupt_jpeg_stops_training_with_one_line_naming_it(dataset, tmp_path, capfd):
    idx = tmp_path / "index"
    _prepare(dataset, idx)
    first = (idx / "train_aug.txt").read_text().split()[0]
    jpg = dataset / "JPEGImages" / f"{first}.jpg"
    jpg.write_bytes(jpg.read_bytes()[:200])  # truncated
    out = tmp_path / "pretrain"
    with pytest.raises(SystemExit) as exit_info:
        # threads=2: the image is read in a DataLoader worker, whose traceback torch puts
        # into the exception's message; the log line must still be the one-line reason.
        run_logged(
            None,
            pretrain,
            dataset_info=idx / "dataset.json",
            split_file=idx / "train_aug.txt",
            labels_csv=idx / "cls_labels.csv",
            saliency_dir=dataset / "SALImages",
            model=MODEL,
            params={"method": "eps", **LOOP, "augment": AUG},
            out_model=out / "model.pt",
            out_history=out / "history.csv",
            state_dir=out / "state",
            threads=2,
        )
    assert exit_info.value.code == 1
    (line,) = _error_lines(capfd.readouterr().err)  # one line, nothing after it
    assert str(jpg) in line and "corrupt or truncated" in line and "Traceback" not in line
    assert not (out / "model.pt").exists()


@pytest.mark.parametrize("content", [b"", b"not an image at all", "truncated"])
def test_corrupt_image_or_mask_file_is_named(dataset, content):
    jpg = next((dataset / "JPEGImages").glob("*.jpg"))
    png = dataset / "SegmentationClass" / f"{jpg.stem}.png"
    for path, reader in ((jpg, load_image), (png, load_mask)):
        data = path.read_bytes()[:100] if content == "truncated" else content
        path.write_bytes(data)
        with pytest.raises(Exception, match=str(path.name)) as info:
            reader(path)
        assert type(info.value).__name__ == "DataError"


def test_bad_input_mask_values_outside_0_to_c_and_255(dataset, tmp_path):
    png = sorted((dataset / "SegmentationClass").glob("*.png"))[0]
    mask = np.array(Image.open(png))
    mask[:4, :4] = 77  # C = 6: neither a class nor the 255 ignore label
    Image.fromarray(mask).save(png)
    with pytest.raises(Exception, match=rf"{png.stem}.*77|77.*{png.stem}") as info:
        _prepare(dataset, tmp_path / "index")
    assert type(info.value).__name__ == "DataError"
    assert not (tmp_path / "index" / "dataset.json").exists()


def test_bad_input_missing_split_list_is_named(dataset, tmp_path):
    (dataset / "ImageSets" / "Segmentation" / "val.txt").unlink()
    with pytest.raises(Exception, match="val.txt") as info:
        _prepare(dataset, tmp_path / "index")
    assert type(info.value).__name__ == "DataError"
    shutil.rmtree(tmp_path / "index", ignore_errors=True)
