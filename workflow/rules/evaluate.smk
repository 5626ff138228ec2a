# Seed / CRF / SAM evaluation against SegmentationClass (and SegmentationClassAug when the dataset
# has it), in shards whose confusion matrices are summed, and the summary tables gathering every
# evaluation: results/{dataset}/summary.csv, and results/summary.csv of every dataset run.


rule evaluate_shard:
    input:
        pred=record_predictions,
        index=index_input,
    output:
        temp("results/{dataset}/{experiment}/eval/{record}.shards/{shard}.npz"),
    log:
        "logs/{dataset}/{experiment}/eval/{record}.{shard}.log",
    conda:
        "../../envs/smaf.yaml"
    params:
        code=script_code("evaluate_shard.py"),
        index_rows=rows_of(lambda wildcards: [record_role(wildcards)]),
        role=record_role,
        gt=record_gt,
    script:
        "../scripts/evaluate_shard.py"


# The record of a split scored in shards: the sum of their confusion matrices, scored once.
rule evaluate:
    input:
        shards=eval_shards,
        index=index_input,
    output:
        csv="results/{dataset}/{experiment}/eval/{model}_{stage}_{split}_{gt}.csv",
        json="results/{dataset}/{experiment}/eval/{model}_{stage}_{split}_{gt}.json",
    log:
        "logs/{dataset}/{experiment}/eval/{model}_{stage}_{split}_{gt}.log",
    wildcard_constraints:
        model="eps|smaf|clip",
        stage="seed|crf|sam|sam_crf",
        split="train_aug|train|val",
        gt="SegmentationClass|SegmentationClassAug",
    localrule: True
    conda:
        "../../envs/smaf.yaml"
    params:
        code=script_code("evaluate.py"),
        index_rows=rows_of(lambda wildcards: [wildcards.split]),
        gt="{gt}",
        pred=eval_predictions,
        meta=eval_meta,
    script:
        "../scripts/evaluate.py"


# One dataset's evaluations, each row with the digest of the config that made it (the
# configs themselves in summary_configs.json).
rule dataset_summary:
    input:
        records=summary_inputs,
        index=index_input,
    output:
        csv="results/{dataset}/summary.csv",
        configs="results/{dataset}/summary_configs.json",
    log:
        "logs/{dataset}/summary.log",
    localrule: True
    conda:
        "../../envs/smaf.yaml"
    params:
        code=script_code("dataset_summary.py"),
        index_rows=rows_of(ALL_ROLES),
        configs=summary_configs,
    script:
        "../scripts/dataset_summary.py"


# Every dataset's summary present (the configured one rebuilt): running another dataset adds
# its rows and keeps the others'. The other files are params (with their modification times),
# not inputs, so they are never rebuilt for another dataset's run.
rule summary:
    input:
        summary=f"results/{DATASET}/summary.csv",
        index=dataset_index(DATASET),
    output:
        "results/summary.csv",
    log:
        "logs/summary.log",
    localrule: True
    conda:
        "../../envs/smaf.yaml"
    params:
        code=script_code("summary.py"),
        index_rows=rows_of(ALL_ROLES, dataset=DATASET),
        others=other_summaries(),
        others_mtime=[os.path.getmtime(p) for p in other_summaries()],
    script:
        "../scripts/summary.py"


# `snakemake ablations`: the paper's Tables 3-5 (config `ablations:`), one row per table row,
# run (seed) and stage, from the SMAF seed / CRF evaluations of each row's experiment.
rule ablations:
    input:
        [row["record"] for row in ablation_rows()],
        index=dataset_index(DATASET),
    output:
        f"results/{DATASET}/ablations.csv",
    log:
        f"logs/{DATASET}/ablations.log",
    localrule: True
    conda:
        "../../envs/smaf.yaml"
    params:
        code=script_code("ablations.py"),
        index_rows=rows_of(ALL_ROLES, dataset=DATASET),
        rows=ablation_rows(),
    script:
        "../scripts/ablations.py"
