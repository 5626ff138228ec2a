"""The shared training loop: poly schedule, sample stream, checkpoints, resume, NaN, SIGTERM,
Ctrl-C, progress lines, the state folder lock."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import socket
from dataclasses import replace

import numpy as np
import pytest
import torch

from smaf.checkpointing import StateLock
from smaf.errors import SmafError
from smaf.models.build import ModelConfig, build_classifier
from smaf.train import (
    LoopConfig,
    OptimConfig,
    SampleStream,
    build_optimizer,
    fit,
    load_checkpoint,
    poly_lr,
    set_lr,
)


class ToySet(torch.utils.data.Dataset):
    """Random images whose content depends only on (index, aug seed), like WeakTrainSet."""

    def __len__(self):
        return 5

    def __getitem__(self, item):
        index, seed = item
        g = np.random.default_rng(seed)
        image = torch.from_numpy(g.normal(size=(3, 32, 32)).astype(np.float32)) + index
        labels = torch.zeros(3)
        labels[index % 3] = 1
        return {"image": image, "labels": labels}


def step_fn(model, batch, device):
    out = model(batch["image"].to(device))
    loss = torch.nn.functional.multilabel_soft_margin_loss(
        out["logits"], batch["labels"].to(device)
    )
    return {"loss": loss}


def make(seed=0):
    torch.manual_seed(seed)
    model = build_classifier(
        ModelConfig(width=0.125, head="eps", num_classes=3, freeze_bn=False, freeze_stem=False)
    )
    optim_cfg = OptimConfig(lr=0.05, momentum=0.9)
    return model, build_optimizer(model.param_groups(), optim_cfg), optim_cfg


LOOP = LoopConfig(iterations=6, batch_size=2, checkpoint_every=3, log_every=1, device="cpu")
CONFIG = {"test": 1}


def test_poly_lr_hand_values():
    assert poly_lr(0.01, 0, 100, 0.9) == pytest.approx(0.01)
    assert poly_lr(0.01, 50, 100, 0.9) == pytest.approx(0.01 * 0.5**0.9)
    assert poly_lr(0.01, 100, 100, 0.9) == 0.0


def test_optimizer_groups_get_multipliers_and_no_decay_on_biases():
    model, opt, cfg = make()
    set_lr(opt, cfg, 10, 100)
    base = poly_lr(cfg.lr, 10, 100, cfg.poly_power)
    by_name = {g["name"]: g for g in opt.param_groups}
    assert by_name["backbone_weight"]["lr"] == pytest.approx(base)
    assert by_name["head_weight"]["lr"] == pytest.approx(10 * base)
    assert by_name["backbone_other"]["weight_decay"] == 0.0  # BN affine: no weight decay
    assert by_name["head_weight"]["weight_decay"] == pytest.approx(cfg.weight_decay)
    assert opt.defaults["momentum"] == cfg.momentum


def test_released_momentum_quirk_is_a_config_value():
    model, _, _ = make()
    opt = build_optimizer(model.param_groups(), OptimConfig(momentum=5e-4))
    assert all(g["momentum"] == 5e-4 for g in opt.param_groups)


def test_sample_stream_is_deterministic_and_covers_each_epoch():
    s = SampleStream(5, seed=3)
    it = iter(s)
    first = [next(it) for _ in range(10)]
    assert sorted(i for i, _ in first[:5]) == list(range(5))  # epoch 0 is a permutation
    assert sorted(i for i, _ in first[5:]) == list(range(5))
    assert len({seed for _, seed in first}) == 10  # a fresh augmentation seed per position
    resumed = iter(SampleStream(5, seed=3, start=7))
    assert [next(resumed) for _ in range(3)] == first[7:10]


def test_resume_after_kill_gives_the_same_next_losses(tmp_path):
    """Stopping after a checkpoint and resuming reproduces the uninterrupted run exactly."""
    model, opt, cfg = make()
    full = fit(model, opt, ToySet(), step_fn, LOOP, cfg, None, CONFIG)

    state = tmp_path / "state"
    model, opt, cfg = make()
    fit(model, opt, ToySet(), step_fn, LOOP, cfg, state, CONFIG, stop_after=4)  # "killed" at 4
    assert load_checkpoint(state / "checkpoint.pt")["step"] == 3  # the last checkpoint
    model, opt, cfg = make(seed=123)  # a fresh process: different init, restored from disk
    resumed = fit(model, opt, ToySet(), step_fn, LOOP, cfg, state, CONFIG)
    assert [r["step"] for r in resumed] == list(range(1, 7))
    for a, b in zip(full, resumed, strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-6, abs=1e-7), (a, b)


def test_checkpoint_of_another_configuration_is_not_resumed(tmp_path, caplog):
    model, opt, cfg = make()
    fit(model, opt, ToySet(), step_fn, LOOP, cfg, tmp_path, CONFIG, stop_after=3)
    model, opt, cfg = make()
    history = fit(model, opt, ToySet(), step_fn, LOOP, cfg, tmp_path, {"test": 2})
    assert history[0]["step"] == 1
    assert "different configuration" in caplog.text


def test_checkpoint_is_loaded_weights_only(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned > " + str(tmp_path / "pwned"),))

    torch.save({"step": 1, "evil": Evil()}, tmp_path / "checkpoint.pt")
    with pytest.raises(SmafError, match="not a SMAF checkpoint"):
        load_checkpoint(tmp_path / "checkpoint.pt")
    assert not (tmp_path / "pwned").exists()


def non_finite_at(call, factor):
    """step_fn whose loss is multiplied by ``factor`` (nan / inf) at its ``call``-th call."""
    calls = []

    def step(model, batch, device):
        out = step_fn(model, batch, device)
        calls.append(1)
        if len(calls) == call:
            out["loss"] = out["loss"] * factor
        return out

    return step


def signal_at(call, signum):
    """step_fn that sends this process ``signum`` at its ``call``-th call."""
    calls = []

    def step(model, batch, device):
        calls.append(1)
        if len(calls) == call:
            os.kill(os.getpid(), signum)
        return step_fn(model, batch, device)

    return step


def test_nan_loss_stops_with_the_step_and_last_checkpoint(tmp_path):
    model, opt, cfg = make()
    with pytest.raises(
        SmafError, match=r"loss became nan at step 5; last good checkpoint: .*step 3"
    ):
        fit(model, opt, ToySet(), non_finite_at(5, float("nan")), LOOP, cfg, tmp_path, CONFIG)


def test_sigterm_writes_a_checkpoint_then_exits(tmp_path):
    model, opt, cfg = make()
    with pytest.raises(SystemExit) as exc:
        fit(model, opt, ToySet(), signal_at(2, signal.SIGTERM), LOOP, cfg, tmp_path, CONFIG)
    assert exc.value.code == 143
    assert load_checkpoint(tmp_path / "checkpoint.pt")["step"] == 2
    assert signal.getsignal(signal.SIGTERM) is not None  # the previous handler is back


@pytest.mark.parametrize(
    "option", [{"channels_last": True}, pytest.param({"compile": True}, marks=pytest.mark.slow)]
)
def test_speed_options_train_the_same_model(option):
    """channels_last and torch.compile change the speed, not the losses (float rounding aside)."""
    loop = LoopConfig(iterations=3, batch_size=2, log_every=1, device="cpu")
    model, opt, cfg = make()
    plain = fit(model, opt, ToySet(), step_fn, loop, cfg, None, CONFIG)
    model, opt, cfg = make()
    fast = fit(model, opt, ToySet(), step_fn, replace(loop, **option), cfg, None, CONFIG)
    for a, b in zip(plain, fast, strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-2), (a, b)
    assert model.has_background  # the model object itself still answers (not a wrapper)


def test_nan_between_log_lines_is_found_before_the_next_checkpoint(tmp_path):
    """Losses are read every log_every / checkpoint_every steps, not every step: a NaN at
    step 5 is found at step 6 (a checkpoint step), named as step 5, and no checkpoint with
    its weights is written."""

    model, opt, cfg = make()
    loop = replace(LOOP, log_every=4, checkpoint_every=3)
    with pytest.raises(SmafError, match=r"loss became inf at step 5; .*step 3\)"):
        fit(model, opt, ToySet(), non_finite_at(5, float("inf")), loop, cfg, tmp_path, CONFIG)
    assert load_checkpoint(tmp_path / "checkpoint.pt")["step"] == 3
    lines = (tmp_path / "history.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [1, 2, 3, 4]  # checked steps only


def test_history_is_the_same_whatever_the_log_interval():
    model, opt, cfg = make()
    every = fit(model, opt, ToySet(), step_fn, LOOP, cfg, None, CONFIG)
    model, opt, cfg = make()
    sparse = fit(model, opt, ToySet(), step_fn, replace(LOOP, log_every=5), cfg, None, CONFIG)
    assert every == sparse


def test_ctrl_c_writes_a_checkpoint_then_exits_130_and_restores_the_handler(tmp_path, caplog):
    before = signal.getsignal(signal.SIGINT)
    model, opt, cfg = make()
    with pytest.raises(SystemExit) as exc:
        fit(model, opt, ToySet(), signal_at(2, signal.SIGINT), LOOP, cfg, tmp_path, CONFIG)
    assert exc.value.code == 130
    assert load_checkpoint(tmp_path / "checkpoint.pt")["step"] == 2
    assert "interrupted (SIGINT): checkpoint written at step 2; rerun to resume" in caplog.text
    assert signal.getsignal(signal.SIGINT) is before


def test_progress_lines_every_log_every_steps_and_at_the_first_step_of_a_resumed_run(
    tmp_path, caplog
):
    """A run resumed at step 3 (log_every 4) writes steps 4 (its first), 4 (a multiple, the
    same line is not repeated) and 6 (the last), with images/s counting this run only."""
    loop = replace(LOOP, log_every=4)
    model, opt, cfg = make()
    fit(model, opt, ToySet(), step_fn, loop, cfg, tmp_path, CONFIG, stop_after=4)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="smaf.train"):
        model, opt, cfg = make()
        fit(model, opt, ToySet(), step_fn, loop, cfg, tmp_path, CONFIG, desc="pretrain")
    lines = [r.getMessage() for r in caplog.records if r.name == "smaf.train"]
    assert lines[0].startswith("resuming from") and lines[0].endswith("at step 3 of 6")
    progress = [line for line in lines if line.startswith("pretrain: ")]
    assert [line.split(",")[0] for line in progress] == [
        "pretrain: 4/6 steps",
        "pretrain: 6/6 steps",
    ]
    assert "images/s" in progress[0] and "ETA" in progress[0]
    assert re.search(r"loss=\d+\.\d{4} lr=\d\.\d\de-\d\d$", progress[0]), progress[0]


def test_state_folder_lock_is_exclusive_even_in_one_process_and_names_its_holder(tmp_path):
    first = StateLock(tmp_path)
    first.acquire()
    holder = json.loads((tmp_path / "lock").read_text())
    assert holder == {"pid": os.getpid(), "host": socket.gethostname()}
    model, opt, cfg = make()
    with pytest.raises(SmafError, match=rf"another trainer \(PID {os.getpid()} on "):
        fit(model, opt, ToySet(), step_fn, LOOP, cfg, tmp_path, CONFIG)
    assert not (tmp_path / "checkpoint.pt").exists()
    first.release()
    fit(model, opt, ToySet(), step_fn, replace(LOOP, iterations=1), cfg, tmp_path, CONFIG)
    with StateLock(tmp_path):  # fit let go of it when it returned
        pass
