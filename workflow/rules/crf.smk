# Dense-CRF refinement of the seeds: the released SMAF variant (hard seeds) or the PSA/EPS one
# (soft fused maps + background score), in `threads` worker processes (--set-threads crf=N),
# over every split any run needs of the classifier (crf_roles), in shards, then gathered.


rule crf:
    input:
        seeds=crf_seeds,
        index="results/{dataset}/data/index.csv",
    output:
        temp(touch("results/{dataset}/{experiment}/crf/{model}.shards/{shard}.done")),
    log:
        "logs/{dataset}/{experiment}/crf/{model}.{shard}.log",
    benchmark:
        "benchmarks/{dataset}/{experiment}/crf/{model}.{shard}.tsv"
    wildcard_constraints:
        model="eps|smaf",
    conda:
        "../../envs/smaf.yaml"
    threads: 8
    params:
        code=script_code("crf.py"),
        roles=crf_roles,
        # smaf.settings.CRFSettings: the method and its own parameters.
        settings=stage_settings("crf"),
        out_dir="results/{dataset}/{experiment}/crf/{model}",
        work_dir="results/{dataset}/state/{experiment}/crf/{model}/{shard}",
    script:
        "../scripts/crf.py"


rule crf_gather:
    input:
        crf_shards,
    output:
        directory("results/{dataset}/{experiment}/crf/{model}"),
    log:
        "logs/{dataset}/{experiment}/crf/{model}.gather.log",
    wildcard_constraints:
        model="eps|smaf",
    localrule: True
    conda:
        "../../envs/smaf.yaml"
    params:
        code=script_code("gather_crf.py"),
        kind="crf",
        work_dirs=crf_work_dirs,
    script:
        "../scripts/gather_crf.py"
