# CAM seeds: multi-scale fused attention of a trained classifier (EPS or SMAF), argmax with a
# constant background score. One folder per classifier and settings, covering every split any
# run needs (seeds_roles; the EPS model's are shared by the runs with the same seeds settings,
# and are the offline teacher's maps when those settings agree: smaf.experiments). Each folder
# is computed in shards (config `shards:`), one job each, then gathered. Its paths (SEEDS) and
# input functions live in common_stages.smk.


rule seeds:
    input:
        unpack(thr_auto_input("seeds")),
        model=classifier_model,
        index=index_input,
    output:
        **SEEDS.job_outputs(),
    log:
        SEEDS.per_job("logs/{dataset}/{experiment}/seeds/{model}.log"),
    benchmark:
        SEEDS.per_job("benchmarks/{dataset}/{experiment}/seeds/{model}.tsv")
    wildcard_constraints:
        model="eps|smaf",
    conda:
        "../../envs/smaf.yaml"
    threads: 4
    resources:
        gpu=1,
    params:
        code=script_code("seeds.py"),
        index_rows=rows_of(seeds_roles),
        roles=seeds_roles,
        settings=stage_settings("seeds"),  # smaf.settings.SeedsSettings
        # Per-image results survive a failed or killed job here (outside the outputs); the
        # gather publishes every shard's at once.
        out_dir=SEEDS.out,
        work_dir=SEEDS.work_dir,
    script:
        "../scripts/seeds.py"


# The CLIP base's seeds (pretrain.method clip): CLIP-ES CAMs of the pretrain.clip weights at
# the pretrain.clip settings, in the seeds' layout (maps/<id>.npz, <id>.png, seeds.json), so
# CRF, evaluation and (when the settings agree) SMAF's offline teacher read them as EPS seeds.
# Shared by every run with the same seeds.thr (seeds_folder); sharded and gathered the same way.
rule clip_maps:
    input:
        weights=clip_weights_input,
        index=index_input,
    output:
        **SEEDS.job_outputs(),
    log:
        SEEDS.per_job("logs/{dataset}/{experiment}/seeds/{model}.log"),
    benchmark:
        SEEDS.per_job("benchmarks/{dataset}/{experiment}/seeds/{model}.tsv")
    wildcard_constraints:
        model="clip",
    conda:
        "../../envs/smaf.yaml"
    threads: 4
    resources:
        gpu=1,
    params:
        code=script_code("clip_maps.py"),
        index_rows=rows_of(seeds_roles),
        weights=clip_weights,
        roles=seeds_roles,
        settings=lambda wildcards: EXP.clip_settings(wildcards.experiment),
        thr=experiment_field("seeds", "thr"),
        out_dir=SEEDS.out,
        work_dir=SEEDS.work_dir,
    script:
        "../scripts/clip_maps.py"


if not ONE_JOB:

    rule seeds_gather:
        input:
            SEEDS.shards,
        output:
            directory(SEEDS.out),
        log:
            "logs/{dataset}/{experiment}/seeds/{model}.gather.log",
        wildcard_constraints:
            model="eps|smaf|clip",
        localrule: True
        conda:
            "../../envs/smaf.yaml"
        params:
            code=script_code("gather_seeds.py"),
            work_dirs=SEEDS.work_dirs,
        script:
            "../scripts/gather_seeds.py"
