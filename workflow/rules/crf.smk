# Dense-CRF refinement of the seeds: the released SMAF variant (hard seeds) or the PSA/EPS one
# (soft fused maps + background score), in `threads` worker processes (--set-threads crf=N).


rule crf:
    input:
        seeds="results/{dataset}/{experiment}/seeds/{model}_{split}",
        index="results/{dataset}/data/index.csv",
    output:
        directory("results/{dataset}/{experiment}/crf/{model}_{split}"),
    log:
        "logs/{dataset}/{experiment}/crf/{model}_{split}.log",
    benchmark:
        "benchmarks/{dataset}/{experiment}/crf/{model}_{split}.tsv"
    wildcard_constraints:
        model="eps|smaf",
    conda:
        "../../envs/smaf.yaml"
    threads: 8
    params:
        code=script_code("crf.py"),
        method=experiment_field("crf", "method"),
        settings=crf_method_params,
        work_dir="results/{dataset}/state/{experiment}/crf/{model}_{split}",
    script:
        "../scripts/crf.py"
