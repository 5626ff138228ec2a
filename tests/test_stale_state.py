"""A resumable training state is keyed on everything its result depends on, and a finished job's
state never seeds a new run: after a finished run, an edited label (or replaced init weights)
trains afresh instead of resuming a checkpoint made with the old data."""

from __future__ import annotations

import logging

import pytest
import torch
from test_train import CONFIG, LOOP, ToySet, make, step_fn

from smaf.data.index import DatasetIndex
from smaf.models.checkpoint import load_model, save_model
from smaf.settings import PretrainSettings, SelfTrainSettings
from smaf.stages import pretrain as pretrain_stage
from smaf.stages import self_train as self_train_stage
from smaf.train import fit

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_a_finished_run_leaves_no_state_to_resume(tmp_path, caplog) -> None:
    model, opt, cfg = make()
    fit(model, opt, ToySet(), step_fn, LOOP, cfg, tmp_path, CONFIG)  # 6 steps, checkpoint at 3
    assert not (tmp_path / "checkpoint.pt").exists()
    model, opt, cfg = make()
    with caplog.at_level(logging.INFO):
        again = fit(model, opt, ToySet(), step_fn, LOOP, cfg, tmp_path, CONFIG)
    assert again[0]["step"] == 1 and "resuming" not in caplog.text


class _Recorder:
    """Stands in for fit: records the identity a stage keys its state on, trains nothing."""

    def __init__(self) -> None:
        self.configs: list[dict] = []

    def __call__(self, net, optimizer, dataset, step, loop, optim, state_dir, config, **kw):
        self.configs.append(config)
        return []


MODEL = {"width": 0.125, "head": "eps", "freeze_bn": False, "freeze_stem": False}
SETTINGS = {"method": "cam", "iterations": 2, "batch_size": 2, "device": "cpu"}


def _pretrain(index, tmp_path):
    pretrain_stage.pretrain(
        index=index,
        model=MODEL,
        settings=PretrainSettings.from_dict(SETTINGS),
        out_model=tmp_path / "m.pt",
        out_history=tmp_path / "h.csv",
        state_dir=tmp_path / "state",
    )


def test_the_state_key_follows_a_label_edit_and_a_replaced_image(
    tiny_index, tmp_path, monkeypatch
) -> None:
    fit_ = _Recorder()
    monkeypatch.setattr(pretrain_stage, "fit", fit_)
    index = DatasetIndex.read(tiny_index)
    _pretrain(index, tmp_path)
    _pretrain(DatasetIndex.read(tiny_index), tmp_path)
    table = index.table.copy()
    victim = index.ids("train_aug")[0]
    table.loc[victim, "label_" + index.class_names[1]] = (
        1 - table.loc[victim, "label_" + index.class_names[1]]
    )
    _pretrain(DatasetIndex(table, index.info), tmp_path)
    replaced = index.table.copy()
    replaced.loc[victim, "image_digest"] = "0" * 32  # same path, other content
    _pretrain(DatasetIndex(replaced, index.info), tmp_path)
    same, label, image = (c for c in fit_.configs[1:])
    assert same == fit_.configs[0]
    assert label != same and image != same
    # Rows outside the training split are not part of it.
    val = index.table.copy()
    val.loc[index.ids("val")[0], "image_digest"] = "f" * 32
    _pretrain(DatasetIndex(val, index.info), tmp_path)
    assert fit_.configs[-1] == same


def test_the_self_training_state_key_follows_the_init_weights_content(
    tiny_index, tiny_model, tmp_path, monkeypatch
) -> None:
    fit_ = _Recorder()
    monkeypatch.setattr(self_train_stage, "fit", fit_)
    init = tmp_path / "init.pt"
    init.write_bytes(tiny_model.read_bytes())

    def run():
        self_train_stage.self_train(
            index=tiny_index,
            init_model=init,
            teacher_dir=None,
            settings=SelfTrainSettings.from_dict(
                {"teacher": "online", "iterations": 2, "batch_size": 2, "device": "cpu"}
            ),
            out_model=tmp_path / "s.pt",
            out_history=tmp_path / "s.csv",
            state_dir=tmp_path / "state",
        )

    run()
    run()
    assert fit_.configs[0] == fit_.configs[1]
    model, meta = load_model(init)
    with torch.no_grad():
        next(model.parameters()).add_(1.0)
    save_model(init, model, meta)  # the same path: a new model
    run()
    assert fit_.configs[2] != fit_.configs[1]
