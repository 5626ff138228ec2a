"""The ``smaf`` command: ``smaf predict``, ``smaf export``, ``smaf check-config``.

Installed as a console script (``[project.scripts] smaf = "smaf.cli:main"``); also
``python -m smaf.cli``. Every problem a person can fix (a :class:`~smaf.errors.SmafError`)
ends the command with one line ``smaf: error: ...`` and exit status 1; a wrong or missing
option with one such line and status 2 (argparse's convention). Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, NoReturn

import yaml

from smaf import __version__
from smaf.errors import ConfigError, SmafError

PROG = "smaf"


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``smaf: error: <message> (see smaf <cmd> --help)``."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{PROG}: error: {message} (see {self.prog} --help)\n")


# ------------------------------------------------------------------------- check-config
class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML loader that refuses a key given twice in one mapping (PyYAML keeps the last)."""


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        line = key_node.start_mark.line + 1
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None,
                None,
                f"key {key!r} given twice (first on line {seen[key]})",
                key_node.start_mark,
            )
        seen[key] = line
    return loader.construct_mapping(node, deep=True)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def load_yaml_config(path: str | Path) -> dict[str, Any]:
    """A config file as a dict; errors name the file and line (``config.yaml, line 3, column
    7: ...``), including a key given twice in one mapping."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file {path} ({exc}).") from None
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark, start = exc.problem_mark or exc.context_mark, exc.context_mark
        where = f"{path}, line {mark.line + 1}, column {mark.column + 1}" if mark else str(path)
        what = exc.problem or exc.context or "YAML error"
        if exc.context and start is not None and start is not mark:
            what += (
                f" ({exc.context} that starts on line {start.line + 1}, column {start.column + 1})"
            )
        raise ConfigError(f"{where}: {what}.") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path}: the top level must be a mapping of keys, got a {type(data).__name__}."
        )
    return data


def config_problems(
    files: Sequence[str | Path], schema_path: str | Path
) -> tuple[list[str], dict[str, Any]]:
    """Every problem of the config made of ``files`` merged in order (as Snakemake merges
    ``configfile:`` and ``--configfile``): schema, value combinations, then each experiment
    merged with it (as the workflow checks them). Returns ``(problems, merged config)``.

    Raises:
        ConfigError: a file cannot be read or parsed (naming the file and line).
    """
    from smaf.config import combination_problems, deep_merge, load_schema, schema_problems
    from smaf.experiments import Experiments

    merged: dict[str, Any] = {}
    for f in files:
        merged = deep_merge(merged, load_yaml_config(f))
    try:
        schema = load_schema(schema_path)
    except FileNotFoundError:
        raise ConfigError(
            f"schema not found: {schema_path}; run in the checkout or give --schema."
        ) from None
    problems = schema_problems(merged, schema) or combination_problems(merged)
    if problems:
        return problems, merged
    try:
        experiments = Experiments(merged)
    except ConfigError as exc:
        return [str(exc)], merged
    except (KeyError, TypeError):
        return [], merged  # keys the schema fills with defaults; the workflow checks the rest
    for name in experiments.all:
        cfg = experiments.merged_config(name)
        found = schema_problems(cfg, schema) or combination_problems(cfg)
        problems += [f"experiment '{name}': {p}" for p in found]
    sam = sam_problems(merged) if experiments.uses_sam() else []
    return problems + dataset_problems(merged) + sam, merged


def sam_problems(config: dict[str, Any]) -> list[str]:
    """SAM is used: ``sam.checkpoint`` set (a download item, or a file that exists) and the
    extra installed."""
    from importlib.util import find_spec

    ckpt = (config.get("sam") or {}).get("checkpoint")
    if not ckpt:
        return [
            "sam.checkpoint: refine: or deeplab.pseudo_labels uses SAM; give a SAM checkpoint's "
            "path or a downloads: item (sam_vit_b_01ec64.pth)"
        ]
    problems = []
    if ckpt not in (config.get("downloads") or {}) and not Path(ckpt).is_file():
        problems.append(f"sam.checkpoint: {ckpt} not found (a path, or a downloads: item)")
    if find_spec("segment_anything") is None:
        problems.append("sam: segment-anything is not installed: pip install 'smaf[sam]'")
    return problems


def dataset_problems(config: dict[str, Any]) -> list[str]:
    """The run's dataset (``dataset:``): what the dataset stage would refuse before reading
    any image (paths, cross-key rules), by the same check
    (:func:`smaf.data.sources.settings_problems`)."""
    from smaf.data.sources import settings_problems
    from smaf.experiments import eps_is_trained

    name = config.get("dataset")
    settings = (config.get("datasets") or {}).get(name)
    if not isinstance(settings, dict):
        return []  # the workflow names an undeclared dataset itself
    return settings_problems(
        str(settings.get("source")), settings, name=name, needs_saliency=eps_is_trained(config)
    )


def _check_config(args: argparse.Namespace) -> int:
    files = [args.base, *args.configfiles]
    missing = [str(f) for f in files if not Path(f).is_file()]
    if missing:
        hint = " (run in the checkout or give --base)" if missing[0] == str(args.base) else ""
        raise ConfigError(f"config file not found: {missing[0]}{hint}.")
    problems, _ = config_problems(files, args.schema)
    for problem in problems:
        print(f"{PROG}: error: {problem}", file=sys.stderr)
    names = " + ".join(str(f) for f in files)
    if problems:
        print(f"{PROG}: {len(problems)} problem(s) in {names}", file=sys.stderr)
        return 1
    print(f"config OK: {names}")
    return 0


# ------------------------------------------------------------------------ predict, export
def _predict(args: argparse.Namespace) -> int:
    from smaf.predict.folder import predict_folder

    summary = predict_folder(
        args.model,
        args.images,
        args.out,
        crf=args.crf,
        overlay=args.overlay,
        cams=True if args.cams else None,
        classes=args.classes,
        device=args.device,
        batch_size=args.batch,
        scales=args.scales,
        flip=args.flip,
        thr=args.thr,
        alpha=args.alpha,
        amp=args.amp,
        threads=args.threads,
        strict=args.strict,
        overwrite=args.overwrite,
        log_every=args.log_every,
    )
    print(
        f"{summary['predicted']} predicted, {summary['reused']} already done, "
        f"{summary['skipped']} unreadable -> {args.out}"
    )
    return 0


def _export(args: argparse.Namespace) -> int:
    from smaf.export import export_deeplab

    info = export_deeplab(args.model, args.out, args.format, args.size, args.tol)
    c = info["checked"]
    check = "not checked"
    if c["max_abs_diff"] is not None:
        check = (
            f"max |difference| to PyTorch {c['max_abs_diff']:.2g} on logits of scale "
            f"{c['scale']:.3g}, labels agree on {100 * c['argmax_agreement']:.2f} %"
        )
    print(f"wrote {args.out} and {args.out}.json ({args.format}, {check})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The ``smaf`` argument parser with its subcommands."""
    parser = _Parser(
        prog=PROG,
        description="SMAF: segment new images with a trained model, export it, check configs.",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    p = sub.add_parser(
        "predict",
        help="segment a folder of images with a DeepLab model (or show a classifier's CAMs)",
        description=(
            "Segment every image under --images (any depth; jpg, jpeg, png, bmp, tif, tiff, "
            "webp; EXIF orientation applied; grey/palette/16-bit/CMYK converted to RGB, alpha "
            "dropped). Writes OUT/masks/<name>.png (VOC palette, values 0..C), "
            "OUT/classes.json, OUT/areas.csv (fraction of each class per image), optional "
            "OUT/overlay/<name>.jpg; a classifier model (pretrain/self_train) gives "
            "OUT/cams/<name>_<class>.png heat maps instead. Resumable: images with a mask are "
            "skipped. Unreadable images are skipped with a warning and listed at the end."
        ),
    )
    p.add_argument("--model", required=True, help="a model.pt of deeplab, self_train or pretrain")
    p.add_argument(
        "--images",
        required=True,
        nargs="+",
        help="folder of images (sub-folders included), image file(s), or several of both",
    )
    p.add_argument("--out", required=True, help="output folder (resumed when it exists)")
    p.add_argument("--crf", action="store_true", help="DeepLab's dense CRF on the prediction")
    p.add_argument("--overlay", action="store_true", help="also write colour overlays")
    p.add_argument(
        "--cams",
        action="store_true",
        help="a classifier's CAMs of the classes it finds in each image (logit > 0, i.e. "
        "sigmoid > 0.5: new images have no labels); the default for classifier models",
    )
    p.add_argument("--classes", help="class names file (one per line, or a JSON list)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default auto)")
    p.add_argument(
        "--batch", type=int, default=1, help="DeepLab: same-size images per batch (default 1)"
    )
    p.add_argument(
        "--scales",
        type=float,
        nargs="+",
        help="DeepLab: MSC scales (default the model's); CAMs: default 0.5 1 1.5 2",
    )
    p.add_argument(
        "--flip",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="add the mirrored image (default: off for DeepLab, on for CAMs)",
    )
    p.add_argument(
        "--thr", type=float, default=0.2, help="CAMs: background score of the mask (0.2)"
    )
    p.add_argument("--alpha", type=float, default=0.5, help="overlay opacity (default 0.5)")
    p.add_argument("--amp", action="store_true", help="bf16 autocast on CUDA")
    p.add_argument("--threads", type=int, help="CPU threads for torch")
    p.add_argument("--strict", action="store_true", help="stop at the first unreadable image")
    p.add_argument("--overwrite", action="store_true", help="redo every image in --out")
    p.add_argument("--log-every", type=int, default=20, help="progress line every N images (20)")
    p.set_defaults(func=_predict)

    p = sub.add_parser(
        "export",
        help="export a DeepLab model to ONNX or TorchScript",
        description=(
            "Export a DeepLab model (eval-mode multi-scale inputs) for deployment. Input: "
            "float32 [B, 3, H, W] RGB/255 normalised with the ImageNet mean and std; output: "
            "logits [B, C+1, ceil(H/8), ceil(W/8)] (upsample bilinearly, argmax). B, H, W "
            "are free. Writes FILE and FILE.json (pre/post-processing, class names, colours) "
            "and checks that the exported model reproduces the PyTorch one. ONNX needs "
            "pip install 'smaf[export]'."
        ),
    )
    p.add_argument("--model", required=True, help="deeplab/model.pt")
    p.add_argument("--format", required=True, choices=("onnx", "torchscript"))
    p.add_argument("--out", required=True, help="output file (.onnx / .pt)")
    p.add_argument(
        "--size",
        type=int,
        nargs=2,
        metavar=("H", "W"),
        default=(321, 321),
        help="example input size for tracing and the check (default 321 321)",
    )
    p.add_argument(
        "--tol",
        "--atol",
        dest="tol",
        type=float,
        default=1e-4,
        help="allowed difference to the PyTorch logits, relative to their scale (1e-4)",
    )
    p.set_defaults(func=_export)

    p = sub.add_parser(
        "check-config",
        help="check config files against the workflow schema before a run",
        description=(
            "Load --base (the checkout's config.yaml) and the given --configfile files merged "
            "in order, as Snakemake does; report YAML errors with file and line, keys given "
            "twice, unknown keys, bad values and impossible combinations, one line each."
        ),
    )
    p.add_argument("configfiles", nargs="*", metavar="FILE", help="--configfile files, in order")
    p.add_argument("--base", default="config.yaml", help="base config (default config.yaml)")
    p.add_argument(
        "--schema",
        default="workflow/schemas/config.schema.yaml",
        help="JSON schema (default workflow/schemas/config.schema.yaml)",
    )
    p.set_defaults(func=_check_config)
    return parser


@contextlib.contextmanager
def _logging_to_stderr() -> Iterator[None]:
    """Log lines (progress, warnings) to stderr while a command runs; the caller's logging
    setup is restored afterwards (main() may be called from Python)."""
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", datefmt="%H:%M:%S"))
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    logging.captureWarnings(True)
    try:
        yield
    finally:
        logging.captureWarnings(False)
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``smaf`` with ``argv`` (default: the command line); return the exit status."""
    args = build_parser().parse_args(argv)
    with _logging_to_stderr():
        try:
            return int(args.func(args))
        except SmafError as exc:
            from smaf.runner import user_message

            line = " ".join(user_message(exc).split())  # one line, whatever the message holds
            print(f"{PROG}: error: {line}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print(f"{PROG}: interrupted", file=sys.stderr)
            return 130


if __name__ == "__main__":
    sys.exit(main())
