"""The smaf command: subcommands, one-line errors with exit status 1, check-config."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import tiny_deeplab
from PIL import Image

from smaf.cli import main

REPO_ROOT = Path(__file__).resolve().parents[1]
BASE = ["--base", str(REPO_ROOT / "config.yaml")]
SCHEMA = ["--schema", str(REPO_ROOT / "workflow" / "schemas" / "config.schema.yaml")]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cli")
    tiny_deeplab(tmp / "model.pt", ["bg", "a", "b"])
    images = tmp / "images"
    (images / "sub").mkdir(parents=True)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (32, 40, 3), dtype=np.uint8)).save(images / "sub/x.png")
    return tmp


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("smaf")]
    assert len(errors) == 1, err
    assert errors[0].startswith("smaf: error: ")
    return errors[0]


def test_help_lists_the_subcommands(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert all(cmd in out for cmd in ("predict", "export", "check-config"))


def test_module_entry_point_runs():
    done = subprocess.run(
        [sys.executable, "-m", "smaf.cli", "predict", "--help"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0 and "--overlay" in done.stdout and "sigmoid > 0.5" in done.stdout


def test_predict_writes_masks(setup, capsys):
    out = setup / "out"
    args = ["predict", "--model", str(setup / "model.pt"), "--images", str(setup / "images")]
    assert main([*args, "--out", str(out), "--device", "cpu", "--overlay"]) == 0
    assert (out / "masks" / "sub" / "x.png").is_file()
    assert (out / "overlay" / "sub" / "x.jpg").is_file()
    assert "1 predicted" in capsys.readouterr().out


def test_predict_takes_image_files(setup, tmp_path, capsys):
    image = setup / "images" / "sub" / "x.png"
    args = ["predict", "--model", str(setup / "model.pt"), "--images", str(image), str(image)]
    assert main([*args[:-1], "--out", str(tmp_path / "o"), "--device", "cpu"]) == 0
    assert (tmp_path / "o" / "masks" / "x.png").is_file()
    assert main([*args, "--out", str(tmp_path / "o2"), "--device", "cpu"]) == 1
    assert "would both be written as masks/x.png" in _one_error_line(capsys)
    folder = ["--model", str(setup), "--images", str(image), "--out", str(tmp_path / "o3")]
    assert main(["predict", *folder]) == 1
    assert "is a folder, not a model file" in _one_error_line(capsys)


@pytest.mark.parametrize("problem", ["not_a_model", "wrong_classes", "no_images", "unreadable"])
def test_predict_errors_are_one_line_and_exit_1(setup, tmp_path, capsys, problem):
    model, images = setup / "model.pt", setup / "images"
    extra = []
    if problem == "not_a_model":
        model = tmp_path / "model.pt"
        model.write_text("hello")
    elif problem == "wrong_classes":
        (tmp_path / "classes.txt").write_text("a\nb\nc\nd\n")
        extra = ["--classes", str(tmp_path / "classes.txt")]
    elif problem == "no_images":
        images = tmp_path / "empty"
        images.mkdir()
    else:
        images = tmp_path / "bad"
        images.mkdir()
        (images / "broken.jpg").write_bytes(b"\xff\xd8 nope")
        extra = ["--strict"]
    args = ["predict", "--model", str(model), "--images", str(images), "--device", "cpu"]
    assert main([*args, "--out", str(tmp_path / "out"), *extra]) == 1
    line = _one_error_line(capsys)
    expected = {
        "not_a_model": "not a SMAF model file",
        "wrong_classes": "trained for 2 classes but",
        "no_images": "no images",
        "unreadable": "broken.jpg",
    }[problem]
    assert expected in line


def test_usage_errors_are_one_line(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["predict", "--images", "x"])
    assert exc.value.code == 2
    assert "--model" in _one_error_line(capsys)


def test_export_command(setup, tmp_path, capsys):
    out = tmp_path / "m.pt"
    cmd = ["export", "--model", str(setup / "model.pt"), "--format", "torchscript"]
    assert main([*cmd, "--out", str(out), "--size", "32", "32"]) == 0
    assert out.is_file() and (tmp_path / "m.pt.json").is_file()
    assert main([*cmd, "--out", str(out), "--size", "4", "4"]) == 1
    assert "size" in _one_error_line(capsys)


def test_export_onnx_without_onnx_names_the_extra(setup, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)  # as after the README's plain install
    cmd = ["export", "--model", str(setup / "model.pt"), "--format", "onnx"]
    assert main([*cmd, "--out", str(tmp_path / "m.onnx"), "--size", "32", "32"]) == 1
    assert "pip install 'smaf[export]'" in _one_error_line(capsys)
    assert not (tmp_path / "m.onnx").exists()


# ----------------------------------------------------------------------------- check-config
def test_check_config_accepts_the_shipped_configs(capsys):
    voc = str(REPO_ROOT / "config" / "voc2012.yaml")
    assert main(["check-config", *BASE, *SCHEMA, voc]) == 0
    assert "config OK" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("dataset: synthetic\ntrain:\n  lr: [1, 2\n", "bad.yaml, line 4"),
        ("seeds:\n  thr: 0.3\n  thr: 0.4\n", "bad.yaml, line 3, column 3: key 'thr' given twice"),
        ("seeds:\n  thrr: 0.3\n", "unknown key 'thrr' in seeds (did you mean 'thr'?)"),
        ("- a\n- b\n", "bad.yaml: the top level must be a mapping"),
    ],
)
def test_check_config_names_file_line_and_key(tmp_path, capsys, text, expected):
    (tmp_path / "bad.yaml").write_text(text)
    assert main(["check-config", *BASE, *SCHEMA, str(tmp_path / "bad.yaml")]) == 1
    err = capsys.readouterr().err
    assert expected in err


def test_check_config_reports_each_problem_on_its_own_line(tmp_path, capsys):
    (tmp_path / "two.yaml").write_text("seeds:\n  thrr: 0.3\n  flipp: true\n")
    assert main(["check-config", *BASE, *SCHEMA, str(tmp_path / "two.yaml")]) == 1
    lines = [x for x in capsys.readouterr().err.splitlines() if x.startswith("smaf: error:")]
    assert len(lines) == 2 and "'flipp'" in lines[0] and "'thrr'" in lines[1]


def test_check_config_names_what_sam_needs(tmp_path, capsys, monkeypatch):
    (tmp_path / "sam.yaml").write_text("refine: [crf, sam]\n")
    assert main(["check-config", *BASE, *SCHEMA, str(tmp_path / "sam.yaml")]) == 1
    assert "sam.checkpoint: refine: or deeplab.pseudo_labels uses SAM" in capsys.readouterr().err
    (tmp_path / "sam.yaml").write_text("deeplab: {pseudo_labels: sam}\nsam: {checkpoint: no.pth}\n")
    monkeypatch.setitem(sys.modules, "segment_anything", None)  # as without the extra
    assert main(["check-config", *BASE, *SCHEMA, str(tmp_path / "sam.yaml")]) == 1
    err = capsys.readouterr().err
    assert "sam.checkpoint: no.pth not found" in err and "pip install 'smaf[sam]'" in err
    (tmp_path / "sam.yaml").write_text("refine: [sam]\nsam: {checkpoint: sam_vit_b_01ec64.pth}\n")
    monkeypatch.delitem(sys.modules, "segment_anything")
    assert main(["check-config", *BASE, *SCHEMA, str(tmp_path / "sam.yaml")]) == 0


def test_check_config_missing_base_is_one_line(tmp_path, capsys):
    assert main(["check-config", "--base", str(tmp_path / "config.yaml"), *SCHEMA]) == 1
    assert "config file not found" in _one_error_line(capsys)


def _folder_config(tmp_path, **dataset) -> str:
    images = tmp_path / "images"
    (images / "cat").mkdir(parents=True, exist_ok=True)
    settings = {"source": "folder", "images": str(images), "labels": "by_folder", **dataset}
    lines = ["dataset: mine", "datasets:", "  mine:"]
    lines += [f"    {k}: {v}" for k, v in settings.items()]
    (tmp_path / "mine.yaml").write_text("\n".join(lines) + "\n")
    return str(tmp_path / "mine.yaml")


def test_check_config_checks_the_dataset_paths_and_eps_saliency(tmp_path, capsys):
    """The same check as the dataset stage (smaf.data.sources.settings_problems): missing
    images, labels, masks folders and EPS without saliency maps are each one line."""
    config = _folder_config(
        tmp_path,
        images=tmp_path / "imgs",
        labels=tmp_path / "labels.csv",
        masks=tmp_path / "masks",
    )
    assert main(["check-config", *BASE, *SCHEMA, config]) == 1
    lines = [x for x in capsys.readouterr().err.splitlines() if x.startswith("smaf: error:")]
    assert [x.split(":")[2].strip() for x in lines] == [
        "datasets.mine.images",
        "datasets.mine.labels",
        "datasets.mine.masks",
        "datasets.mine.saliency is not set",  # pretrain.method eps (config.yaml's)
    ]
    assert "pretrain.method: cam" in lines[3]
    ok = _folder_config(tmp_path, saliency="compute")
    assert main(["check-config", *BASE, *SCHEMA, ok]) == 0
    assert "config OK" in capsys.readouterr().out


def test_the_dataset_stage_refuses_what_check_config_refuses(tmp_path):
    from smaf.data.prepare import prepare_dataset
    from smaf.errors import ConfigError

    settings = {"images": str(tmp_path / "imgs"), "labels": "by_folder"}
    with pytest.raises(ConfigError, match=r"datasets.mine.images: folder not found: .*imgs"):
        prepare_dataset(
            source="folder", settings=settings, out_index=tmp_path / "i.csv", name="mine"
        )
