# The report: results/report.html, one self-contained page with the paper's tables (Table 1:
# DeepLab on val, Table 2: pseudo labels on train, Tables 3-5: ablations when
# results/{dataset}/ablations.csv exists), per-class IoU, training curves and Figures 1, 3, 4, 5.
# The tables cover every experiment; the figures show the first configured one. The ablation
# table is a param, not an input: the report never forces the ablation runs. No wildcards, so
# the inputs are plain values computed here (no input functions).

#: Experiment whose models, seeds and predictions the figures show.
REPORT_EXPERIMENT = next(iter(config["experiments"]))
_report_eval = experiment_section(REPORT_EXPERIMENT, "evaluation")
#: Split whose pseudo labels Fig. 5a shows: train when the seeds are evaluated on it.
REPORT_SPLIT = (
    "train" if "train" in _report_eval["splits"] else _report_eval["splits"][0]
)
_report_crf = "smaf" if "smaf" in _report_eval["models"] else _report_eval["models"][-1]
#: Fig. 5a columns: title -> label folder (seeds of each evaluated classifier, then CRF).
REPORT_LABEL_DIRS = {
    **{
        f"{m.upper()} seed": f"results/{DATASET}/{REPORT_EXPERIMENT}/seeds/{m}_{REPORT_SPLIT}"
        for m in ("eps", "smaf")
        if m in _report_eval["models"]
    },
    f"{_report_crf.upper()} seed + CRF": (
        f"results/{DATASET}/{REPORT_EXPERIMENT}/crf/{_report_crf}_{REPORT_SPLIT}"
    ),
}
#: Fused maps the seeds stage stored for the same images (Fig. 3 reads them: no forward pass).
REPORT_MAPS_DIRS = {
    m: f"results/{DATASET}/{REPORT_EXPERIMENT}/seeds/{m}_{REPORT_SPLIT}/maps"
    for m in ("eps", "smaf")
    if m in _report_eval["models"]
}
#: The ablation table (rule ablations), shown when present.
REPORT_ABLATIONS = f"results/{DATASET}/ablations.csv"
#: Fig. 5b columns: title -> DeepLab's val predictions (without / with its CRF).
REPORT_PRED_DIRS = {
    "DeepLab": f"results/{DATASET}/{REPORT_EXPERIMENT}/deeplab/pred_val",
    "DeepLab + CRF": f"results/{DATASET}/{REPORT_EXPERIMENT}/deeplab/pred_val_crf",
}


rule report:
    input:
        summary="results/summary.csv",
        index=f"results/{DATASET}/data/index.csv",
        eps_model=f"results/{DATASET}/pretrain/model.pt",
        smaf_model=f"results/{DATASET}/{REPORT_EXPERIMENT}/self_train/model.pt",
        # One chart each: pretraining, then self-training and DeepLab of every experiment.
        histories=[
            f"results/{DATASET}/pretrain/history.csv",
            *[
                f"results/{DATASET}/{name}/{stage}/history.csv"
                for name in config["experiments"]
                for stage in ("self_train", "deeplab")
            ],
        ],
        # Per-class IoU of the figure experiment's evaluations (the CSV beside each record).
        evals=[
            f.replace(".json", ".csv")
            for f in [
                *evaluation_targets(DATASET, REPORT_EXPERIMENT),
                *deeplab_eval_targets(DATASET, REPORT_EXPERIMENT),
            ]
        ],
        labels=list(REPORT_LABEL_DIRS.values()),
        preds=list(REPORT_PRED_DIRS.values()),
    output:
        "results/report.html",
    log:
        "logs/report.log",
    localrule: True
    conda:
        "../../envs/smaf.yaml"
    params:
        code=script_code("report.py"),
        dataset=DATASET,
        train_role=REPORT_SPLIT,
        # Optional: built by the `ablations` rule; read if present, never required. Its
        # modification time is a param, so the next run after `snakemake ablations` redoes
        # the report with the tables.
        ablations=REPORT_ABLATIONS,
        ablations_mtime=(
            os.path.getmtime(REPORT_ABLATIONS)
            if os.path.exists(REPORT_ABLATIONS)
            else None
        ),
        label_dirs=REPORT_LABEL_DIRS,
        pred_dirs=REPORT_PRED_DIRS,
        maps_dirs=REPORT_MAPS_DIRS,
        scales=experiment_section(REPORT_EXPERIMENT, "seeds")["scales"],
        flip=experiment_section(REPORT_EXPERIMENT, "seeds")["flip"],
        thr=experiment_section(REPORT_EXPERIMENT, "self_train")["thr"],
    script:
        "../scripts/report.py"
