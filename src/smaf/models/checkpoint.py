"""Self-describing model files: the weights plus everything needed to rebuild the network.

A stage's final model (``results/.../model.pt``) holds ``{'model': state_dict,
'model_config': ModelConfig fields, 'meta': {...}}`` and is read with ``weights_only=True``,
so a file holding arbitrary pickled objects is refused instead of executed.
"""

from __future__ import annotations

import os
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

import torch

from smaf.errors import SmafError
from smaf.io import atomic_write
from smaf.models.build import Classifier, ModelConfig, build_classifier
from smaf.models.convert_mxnet import load_state_dict_checked
from smaf.models.torch_files import load_torch_file


def save_model(path: str | os.PathLike[str], model: Classifier, meta: dict[str, Any]) -> None:
    """Write the model atomically; ``meta`` holds plain values (class names, stage, steps).

    ``model`` must come from :func:`~smaf.models.build.build_classifier` (it carries its
    ``ModelConfig`` as ``model.config``).
    """
    config = asdict(model.config)
    config["pretrained"] = None  # the weights are in the file; do not reload ImageNet ones
    state = {"model": model.state_dict(), "model_config": config, "meta": dict(meta)}
    with atomic_write(path) as tmp:
        torch.save(state, tmp)


def read_model_file(
    path: str | os.PathLike[str], producer: str = "the stage that produces it"
) -> dict[str, Any]:
    """Read a SMAF model file with ``weights_only=True``; clear SmafError if it is not one.

    ``producer`` names what makes the file, for the messages (e.g. ``"the deeplab_train rule"``).
    """
    if Path(path).is_dir():
        found = (sorted(Path(path).rglob("model.pt")) or sorted(Path(path).rglob("*.pt")))[:3]
        which = (
            f"e.g. {', '.join(map(str, found))}"
            if found
            else "a model.pt of deeplab, self_train or pretrain"
        )
        raise SmafError(f"{path} is a folder, not a model file; give the model file ({which}).")
    state = load_torch_file(
        path,
        missing=f"model file not found: {path}. Run {producer}.",
        unreadable="It is corrupt or not a SMAF model file (only tensors and plain values are "
        f"accepted); delete it and rerun {producer}.",
    )
    if not isinstance(state, dict) or not {"model", "model_config"} <= set(state):
        raise SmafError(f"{path} is not a SMAF model file (no 'model' / 'model_config' entries).")
    return state


def check_num_classes(path: str | os.PathLike[str], trained: int, wanted: int | None) -> None:
    """Refuse weights made for another number of classes (``wanted`` None: no check)."""
    if wanted is not None and trained != wanted:
        raise SmafError(
            f"{path} was trained for {trained} classes but this dataset has {wanted}. "
            "Use weights made for this dataset (delete the file to retrain)."
        )


def load_model(
    path: str | os.PathLike[str], *, num_classes: int | None = None, **overrides: Any
) -> tuple[Classifier, dict[str, Any]]:
    """Rebuild the classifier saved at ``path``; return ``(model, meta)`` (model on the CPU).

    Args:
        num_classes: if given, the file must be for this many classes (clear error otherwise).
        overrides: ModelConfig fields to change when rebuilding (e.g. ``head='smaf'`` is not
            allowed to differ, but ``freeze_bn`` may).
    """
    state = read_model_file(path)
    unknown = set(state["model_config"]) - {f.name for f in fields(ModelConfig)}
    if unknown:
        raise SmafError(
            f"{path} is not a classifier model file (model_config keys {sorted(unknown)}); "
            "a DeepLab model?"
        )
    config = {**state["model_config"], **overrides}
    check_num_classes(path, config["num_classes"], num_classes)
    model = build_classifier(ModelConfig(**config))
    load_state_dict_checked(model, state["model"], path)
    return model, dict(state.get("meta", {}))
