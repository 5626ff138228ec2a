# Dense-CRF refinement of the seeds: the released SMAF variant (hard seeds) or the PSA/EPS one
# (soft fused maps + background score), in `threads` worker processes (--set-threads crf=N),
# over every split any run needs of the classifier (crf_roles), in shards, then gathered.


rule crf:
    input:
        seeds=crf_seeds,
        index=index_input,
    output:
        **CRF.job_outputs(),
    log:
        CRF.per_job("logs/{dataset}/{experiment}/crf/{model}.log"),
    benchmark:
        CRF.per_job("benchmarks/{dataset}/{experiment}/crf/{model}.tsv")
    wildcard_constraints:
        model="eps|smaf|clip",
    conda:
        "../../envs/smaf.yaml"
    threads: 8
    params:
        code=script_code("crf.py"),
        index_rows=rows_of(crf_roles),
        roles=crf_roles,
        # smaf.settings.CRFSettings: the method and its own parameters.
        settings=stage_settings("crf"),
        out_dir=CRF.out,
        work_dir=CRF.work_dir,
    script:
        "../scripts/crf.py"


if not ONE_JOB:

    rule crf_gather:
        input:
            CRF.shards,
        output:
            directory(CRF.out),
        log:
            "logs/{dataset}/{experiment}/crf/{model}.gather.log",
        wildcard_constraints:
            model="eps|smaf|clip",
        localrule: True
        conda:
            "../../envs/smaf.yaml"
        params:
            code=script_code("gather_crf.py"),
            kind="crf",
            work_dirs=CRF.work_dirs,
        script:
            "../scripts/gather_crf.py"
