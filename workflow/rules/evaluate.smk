# Seed / CRF evaluation against SegmentationClass (and SegmentationClassAug when the dataset
# has it), and the summary table gathering every evaluation: results/summary.csv.


rule evaluate:
    input:
        pred=eval_predictions,
        split="results/{dataset}/data/splits/{split}.txt",
        info="results/{dataset}/data/dataset.json",
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
        gt="{gt}",
        aug_mask_dir=aug_mask_dir,
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
    script:
        "../scripts/summary.py"
