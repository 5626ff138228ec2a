"""Test data every suite shares: a tiny synthetic dataset and its index, a tiny random
classifier, noisy seeds made from ground truth. Plain functions, so fixtures (tests/conftest.py)
and bench/crf_speed.py build the same things the same way.

Nothing here imports torch at module level: bench/crf_speed.py's spawned CRF workers re-import
their parent's main module and should start light.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator, Sequence
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from smaf.data.index import DatasetIndex, read_index
from smaf.data.prepare import prepare_dataset
from smaf.data.sources import TRAINVAL_ROLES
from smaf.data.synthetic_generator import SyntheticConfig, write_dataset
from smaf.io import load_mask, save_maps, save_mask

if TYPE_CHECKING:
    import torch

#: The tiny dataset of the session fixtures: 6 classes, train_aug 6 (train = its first 3),
#: val 2, test 2, images 40..56 px. Small enough for a CPU test, big enough for every stage.
TINY = {"n_train_aug": 6, "n_train": 3, "n_val": 2, "n_test": 2, "min_size": 40, "max_size": 56}
#: Split lists of the real VOC subset by role: train_aug = train (330 images), val (346).
VOC_MINI_SPLITS = {"train_aug": "subset_train", "train": "subset_train", "val": "subset_val"}
#: The tiny classifier: ResNet38d at 1/8 width, EPS head (background channel), C = 6.
TINY_MODEL = {"width": 0.125, "head": "eps", "num_classes": 6}


def killed_at_call(real: Any, n: int = 3) -> tuple[Any, list]:
    """A stand-in for a stage's save function: the ``n``-th call raises ``RuntimeError("killed")``
    (as if the job were killed while writing that image), the others save through ``real``.

    Returns the stand-in and the list of paths it was given (``.clear()`` it to count again).
    """
    calls: list = []

    def save(path: Any, *args: Any) -> None:
        calls.append(path)
        if len(calls) == n:
            raise RuntimeError("killed")
        real(path, *args)

    return save, calls


def t(x: Any) -> torch.Tensor:
    """A float32 tensor of ``x`` (nested lists): the hand-computed cases of the method's tests."""
    import torch

    return torch.tensor(x, dtype=torch.float32)


def dataset_settings(root: str | os.PathLike[str], num_classes: int, **extra: Any) -> dict:
    """A ``datasets:`` entry for the VOC-layout folder ``root`` as the adapters read it
    (split list names = the roles, as the synthetic generator writes them)."""
    roles = (*TRAINVAL_ROLES, "test")
    return {
        "root": str(root),
        "num_classes": num_classes,
        "splits": {r: r for r in roles},
        **extra,
    }


def index_dataset(
    root: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    num_classes: int = 6,
    *,
    source: str = "synthetic",
    roles: Sequence[str] = TRAINVAL_ROLES,
    **settings: Any,
) -> Path:
    """Run the dataset stage on the VOC-layout folder ``root``; return the index path.

    Writes ``out_dir/index.csv`` + ``dataset.json`` (``test_index.csv`` + ``test_index.json``
    for ``roles=("test",)``). ``source="voc"`` reads the same folder with the VOC adapter
    (``label_source`` etc. in ``settings``).
    """
    name = "index.csv" if tuple(roles) != ("test",) else "test_index.csv"
    out = Path(out_dir) / name
    prepare_dataset(
        source=source,
        settings=dataset_settings(root, num_classes, **settings),
        out_index=out,
        name="synthetic" if source == "synthetic" else "voc",
        roles=tuple(roles),
        threads=1,
    )
    return out


def synthetic_index(tmp: str | os.PathLike[str], *, with_test: bool = False, **cfg: Any) -> Path:
    """Generate a synthetic dataset (``SyntheticConfig(**cfg)``) in ``tmp/VOC2012`` and index it
    in ``tmp/data``; return ``tmp/data/index.csv`` (``with_test``: also ``test_index.csv``)."""
    tmp = Path(tmp)
    config = SyntheticConfig(**cfg)
    root = tmp / "VOC2012"
    write_dataset(config, root)
    index = index_dataset(root, tmp / "data", config.num_classes)
    if with_test:
        index_dataset(root, tmp / "data", config.num_classes, roles=("test",))
    return index


def dataset_root(index_path: str | os.PathLike[str]) -> Path:
    """The generated folder of an index made by :func:`synthetic_index`."""
    return Path(index_path).parent.parent / "VOC2012"


def tiny_classifier(path: str | os.PathLike[str], *, seed: int = 0, **overrides: Any) -> Path:
    """Save a randomly initialised :data:`TINY_MODEL` classifier (fields overridable) to
    ``path``; trainable BN and stem, as the demo's. Returns ``path``."""
    import torch

    from smaf.models.build import ModelConfig, build_classifier
    from smaf.models.checkpoint import save_model

    torch.manual_seed(seed)
    cfg = ModelConfig(**{**TINY_MODEL, "freeze_bn": False, "freeze_stem": False, **overrides})
    save_model(path, build_classifier(cfg), {"stage": "test"})
    return Path(path)


def tiny_deeplab(
    path: str | os.PathLike[str], class_names: Sequence[str], *, seed: int = 0
) -> Path:
    """Save a randomly initialised DeepLab (ResNet38d at 1/8 width, trainable BN) for
    ``class_names`` (background first) to ``path``. Returns ``path``."""
    import torch

    from smaf.models.deeplab import DeepLabConfig, build_deeplab, save_deeplab

    torch.manual_seed(seed)
    cfg = DeepLabConfig(
        backbone="resnet38d", width=0.125, freeze_bn=False, num_classes=len(class_names) - 1
    )
    save_deeplab(path, build_deeplab(cfg), {"stage": "deeplab", "class_names": list(class_names)})
    return Path(path)


def noisy_seeds(
    index: DatasetIndex | str | os.PathLike[str],
    ids: Sequence[str],
    out_dir: str | os.PathLike[str],
    *,
    noise: float = 0.1,
    blur: int = 5,
    seed: int = 0,
) -> Path:
    """Seeds as the seeds stage stores them, made from the ground truth of ``ids``.

    ``out_dir/<id>.png``: the mask with 255 → 0 and a ``noise`` share of the pixels relabelled
    with a random class present in the image (or background); ``out_dir/maps/<id>.npz``: the
    one-hot ground truth blurred by a ``blur`` × ``blur`` box filter (absent classes 0).
    Returns ``out_dir``.
    """
    import torch
    import torch.nn.functional as F

    index = read_index(index)
    num_classes = index.num_classes
    out_dir = Path(out_dir)
    rng = np.random.default_rng(seed)
    for image_id in ids:
        gt = load_mask(index.mask_path(image_id))
        clean = np.where(gt == 255, 0, gt).astype(np.uint8)  # [H, W] 0..C
        present = np.unique(clean[clean > 0])
        labels = np.zeros(num_classes, dtype=np.float32)
        labels[present - 1] = 1
        flip = rng.random(clean.shape) < noise
        seeds = np.where(flip, rng.choice(np.r_[0, present], clean.shape), clean)
        save_mask(out_dir / f"{image_id}.png", seeds.astype(np.uint8))
        onehot = torch.from_numpy(np.stack([clean == k for k in range(1, num_classes + 1)]))
        soft = F.avg_pool2d(onehot.float()[None], blur, 1, blur // 2, count_include_pad=False)[0]
        save_maps(out_dir / "maps" / f"{image_id}.npz", soft, labels)  # [C, H, W]
    return out_dir


# ---------------------------------------------------------------- a local HTTP mirror
class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # keep test output clean
        pass


@contextlib.contextmanager
def serve_folder(directory: Path, prefix: str = "mirror") -> Iterator[str]:
    """A throw-away HTTP server on 127.0.0.1 serving ``directory``; yields
    ``http://127.0.0.1:<port>/<prefix>`` (the folder's sub-folder ``prefix``)."""
    handler = partial(_QuietHandler, directory=str(directory))
    srv = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    srv.daemon_threads = True
    # A short poll interval keeps shutdown() (and so each test) fast.
    thread = threading.Thread(target=srv.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}/{prefix}"
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join(5)
