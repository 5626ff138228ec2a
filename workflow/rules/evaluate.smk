# Seed / CRF evaluation against SegmentationClass (and SegmentationClassAug when the dataset
# has it), and the summary table gathering every evaluation: results/summary.csv.


rule evaluate:
    input:
        pred=eval_predictions,
        index="results/{dataset}/data/index.csv",
    output:
        csv="results/{dataset}/{experiment}/eval/{model}_{stage}_{split}_{gt}.csv",
        json="results/{dataset}/{experiment}/eval/{model}_{stage}_{split}_{gt}.json",
    log:
        "logs/{dataset}/{experiment}/eval/{model}_{stage}_{split}_{gt}.log",
    wildcard_constraints:
        model="eps|smaf",
        stage="seed|crf",
        gt="SegmentationClass|SegmentationClassAug",
    conda:
        "../../envs/smaf.yaml"
    params:
        code=script_code("evaluate.py"),
        gt="{gt}",
        meta=eval_meta,
    script:
        "../scripts/evaluate.py"


rule summary:
    input:
        summary_inputs,
    output:
        "results/summary.csv",
    log:
        "logs/summary.log",
    localrule: True
    conda:
        "../../envs/smaf.yaml"
    params:
        code=script_code("summary.py"),
    script:
        "../scripts/summary.py"


# `snakemake ablations`: the paper's Tables 3-5 (config `ablations:`), one row per table row,
# run (seed) and stage, from the SMAF seed / CRF evaluations of each row's experiment.
rule ablations:
    input:
        [row["record"] for row in ablation_rows()],
    output:
        f"results/{DATASET}/ablations.csv",
    log:
        f"logs/{DATASET}/ablations.log",
    localrule: True
    conda:
        "../../envs/smaf.yaml"
    params:
        code=script_code("ablations.py"),
        rows=ablation_rows(),
    script:
        "../scripts/ablations.py"
