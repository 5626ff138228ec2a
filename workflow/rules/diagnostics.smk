# Honest diagnostics. `snakemake thr_sweep`: the seeds' background score seeds.thr swept on
# held-out train_aug images that are in no evaluation split (config `thr_sweep:`), for every
# listed experiment: results/<dataset>/<experiment>/thr_sweep.csv (+ .json with the chosen
# thr). `thr: auto` (seeds.thr, self_train.thr): rule thr_auto makes that choice for the seeds
# of one model or the teacher, and the seeds / self_train jobs use it. Input functions
# (thr_sweep_*, thr_auto_*) live in common_outputs.smk.


rule thr_sweep:
    input:
        [f"results/{DATASET}/{run}/thr_sweep.csv" for run in EXP.runs()],
    localrule: True


rule sweep_thr:
    input:
        unpack(thr_sweep_seed_dirs),
        index=index_input,
    output:
        csv="results/{dataset}/{experiment}/thr_sweep.csv",
        json="results/{dataset}/{experiment}/thr_sweep.json",
    log:
        "logs/{dataset}/{experiment}/thr_sweep.log",
    conda:
        "../../envs/smaf.yaml"
    params:
        code=script_code("thr_sweep.py"),
        index_rows=rows_of(ALL_ROLES),
        models=config["thr_sweep"]["models"],
        values=config["thr_sweep"]["values"],
        holdout=config["thr_sweep"]["holdout"],
        seed=config["thr_sweep"]["seed"],
        gt=thr_sweep_gt,
        thr=experiment_field("seeds", "thr"),
        meta=run_meta,
    script:
        "../scripts/thr_sweep.py"


# The held-out choice of `thr: auto` for target eps / smaf (the seeds of that model: the maps
# are computed here, the seeds folder waits for the choice) or teacher (self_train.thr: the
# offline teacher's maps, or computed for the online teacher).
rule thr_auto:
    input:
        unpack(thr_auto_maps),
        index=index_input,
    output:
        "results/{dataset}/{experiment}/thr_auto/{target}.json",
    log:
        "logs/{dataset}/{experiment}/thr_auto/{target}.log",
    wildcard_constraints:
        target="eps|smaf|teacher",
    conda:
        "../../envs/smaf.yaml"
    threads: 4
    resources:
        gpu=1,
    params:
        code=script_code("thr_auto.py"),
        index_rows=rows_of(ALL_ROLES),
        settings=thr_auto_settings,
        values=config["thr_sweep"]["values"],
        holdout=config["thr_sweep"]["holdout"],
        seed=config["thr_sweep"]["seed"],
        gt=thr_sweep_gt,
        meta=run_meta,
    script:
        "../scripts/thr_auto.py"
