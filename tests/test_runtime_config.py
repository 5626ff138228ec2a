"""One list of the `train:` keys that say how a job runs (issue 13 §3): smaf.config.RuntimeConfig.

The workflow's params (what reruns training), the scripts' runtime settings and the checkpoint
fingerprint (smaf.train.loop_identity) all derive from it; these tests hold it to the config
schema and to the loop."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import fields, replace

import pytest
import yaml
from workflow_utils import REPO_ROOT

from smaf.config import (
    PER_RUN_KEYS,
    RUNTIME_KEYS,
    RuntimeConfig,
    result_train_keys,
    runtime_settings,
)
from smaf.errors import ConfigError
from smaf.train import LoopConfig, loop_identity

SCHEMA = REPO_ROOT / "workflow" / "schemas" / "config.schema.yaml"


@pytest.fixture(scope="module")
def train_schema() -> dict:
    return yaml.safe_load(SCHEMA.read_text())["properties"]["train"]["properties"]


def test_runtime_keys_are_the_schemas_train_keys_but_amp_and_seeds_with_its_defaults(
    train_schema,
):
    assert set(RUNTIME_KEYS) == set(train_schema) - {"amp", "seeds"}
    assert PER_RUN_KEYS == ("seeds",)
    defaults = RuntimeConfig()
    assert {k: train_schema[k]["default"] for k in RUNTIME_KEYS} == {
        k: getattr(defaults, k) for k in RUNTIME_KEYS
    }
    # num_workers is a RuntimeConfig field but no `train:` key (the job's threads decide it)
    assert {f.name for f in fields(RuntimeConfig)} == {*RUNTIME_KEYS, "num_workers"}


def test_only_amp_of_a_full_train_section_changes_results(train_schema):
    section = {k: v["default"] for k, v in sorted(train_schema.items())}
    assert result_train_keys(section) == ("amp",)
    # a key RuntimeConfig does not know counts as result-changing (it reruns training)
    assert result_train_keys({**section, "new_key": 1}) == ("amp", "new_key")


def test_runtime_settings_fill_the_defaults_and_check_values():
    settings = runtime_settings({"train": {"device": "cpu", "log_every": 5, "amp": False}})
    assert settings == {
        "device": "cpu",
        "checkpoint_every": 1000,
        "log_every": 5,
        "channels_last": False,
        "compile": False,
        "gpus": 1,
    }
    with pytest.raises(ConfigError, match="checkpoint_every and log_every must be >= 1"):
        runtime_settings({"train": {"checkpoint_every": 0}})
    # what the scripts pass on is accepted by the loop
    assert LoopConfig(**settings).log_every == 5


def test_loop_identity_ignores_every_runtime_field_and_keeps_the_rest():
    loop = LoopConfig(iterations=10, batch_size=4, grad_accum=2, seed=3, amp=False)
    moved = replace(
        loop,
        device="cpu",
        checkpoint_every=7,
        log_every=1,
        channels_last=True,
        compile=True,
        gpus=4,
        num_workers=3,
    )
    expected = {"iterations": 10, "batch_size": 4, "grad_accum": 2, "seed": 3, "amp": False}
    assert loop_identity(loop) == loop_identity(moved) == expected
    assert loop_identity(replace(loop, seed=4)) != loop_identity(loop)


def test_smaf_config_does_not_import_torch():
    """The CRF workers import smaf.config; torch would cost them seconds each."""
    code = "import sys, smaf.config; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
