# Honest diagnostics. `snakemake thr_sweep`: the seeds' background score seeds.thr swept on
# held-out train_aug images that are in no evaluation split (config `thr_sweep:`), for every
# listed experiment: results/<dataset>/<experiment>/thr_sweep.csv (+ .json with the chosen
# thr). Input functions (thr_sweep_*) live below; the others in common.smk.


def thr_sweep_seed_dirs(wildcards):
    """model -> the train_aug seeds folder (its fused maps) of each swept model."""
    base = f"results/{wildcards.dataset}/{wildcards.experiment}/seeds"
    return {m: f"{base}/{m}_train_aug" for m in config["thr_sweep"]["models"]}


def thr_sweep_gt(wildcards):
    """The held-out images' ground truth: SegmentationClassAug where the dataset has it (VOC:
    the only masks of train_aug minus train), else SegmentationClass."""
    if EXP.has_aug_masks(wildcards.dataset):
        return "SegmentationClassAug"
    return "SegmentationClass"


rule thr_sweep:
    input:
        [f"results/{DATASET}/{run}/thr_sweep.csv" for run in EXP.runs()],
    localrule: True


rule sweep_thr:
    input:
        unpack(thr_sweep_seed_dirs),
        index="results/{dataset}/data/index.csv",
    output:
        csv="results/{dataset}/{experiment}/thr_sweep.csv",
        json="results/{dataset}/{experiment}/thr_sweep.json",
    log:
        "logs/{dataset}/{experiment}/thr_sweep.log",
    conda:
        "../../envs/smaf.yaml"
    params:
        code=script_code("thr_sweep.py"),
        models=config["thr_sweep"]["models"],
        values=config["thr_sweep"]["values"],
        holdout=config["thr_sweep"]["holdout"],
        seed=config["thr_sweep"]["seed"],
        gt=thr_sweep_gt,
        thr=experiment_field("seeds", "thr"),
        meta=run_meta,
    script:
        "../scripts/thr_sweep.py"
