# Honest diagnostics. `snakemake thr_sweep`: the seeds' background score seeds.thr swept on
# held-out train_aug images that are in no evaluation split (config `thr_sweep:`), for every
# listed experiment: results/<dataset>/<experiment>/thr_sweep.csv (+ .json with the chosen
# thr). Input functions (thr_sweep_*) live in common_outputs.smk.


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
