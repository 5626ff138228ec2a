# Segment Anything refinement of the seeds (config `refine:` / `deeplab.pseudo_labels`):
# sam_masks runs SAM's automatic mask generator once per image of the dataset
# (results/{dataset}/sam_masks, shared by every classifier and experiment: the masks depend on
# the image alone); sam_refine names each image's masks with its seeds (SEPL's rule,
# smaf.sam.assign); sam_crf runs the dense CRF on the SAM-refined labels. Paths (SAM_MASKS,
# SAM, SAM_CRF) and input functions live in common_stages.smk.


rule sam_masks:
    input:
        checkpoint=sam_checkpoint_input,
        index=index_input,
    output:
        **SAM_MASKS.job_outputs(),
    log:
        SAM_MASKS.per_job("logs/{dataset}/sam_masks.log"),
    benchmark:
        SAM_MASKS.per_job("benchmarks/{dataset}/sam_masks.tsv")
    conda:
        "../../envs/smaf.yaml"
    threads: 4
    resources:
        gpu=1,
    params:
        code=script_code("sam_masks.py"),
        index_rows=rows_of(sam_mask_roles),
        roles=sam_mask_roles,
        # smaf.sam_settings.SamStageSettings: the model and SAM's generator settings (the
        # checkpoint is the input: the masks are keyed on its content digest).
        settings=stage_settings("sam"),
        checkpoint=sam_checkpoint,
        out_dir=SAM_MASKS.out,
        work_dir=SAM_MASKS.work_dir,
    script:
        "../scripts/sam_masks.py"


rule sam_refine:
    input:
        seeds=sam_refine_seeds,
        masks="results/{dataset}/sam_masks",
        index=index_input,
    output:
        **SAM.job_outputs(),
    log:
        SAM.per_job("logs/{dataset}/{experiment}/sam/{model}.log"),
    wildcard_constraints:
        model="eps|smaf|clip",
    conda:
        "../../envs/smaf.yaml"
    params:
        code=script_code("sam_refine.py"),
        index_rows=rows_of(sam_roles),
        roles=sam_roles,
        settings=stage_settings("sam", "refine"),  # smaf.sam_settings.SamRefineSettings
        out_dir=SAM.out,
        work_dir=SAM.work_dir,
    script:
        "../scripts/sam_refine.py"


# SAM then CRF: the crf rule's script over the SAM-refined labels (hard labels: method labels).
rule sam_crf:
    input:
        seeds=sam_crf_input,
        index=index_input,
    output:
        **SAM_CRF.job_outputs(),
    log:
        SAM_CRF.per_job("logs/{dataset}/{experiment}/sam_crf/{model}.log"),
    wildcard_constraints:
        model="eps|smaf|clip",
    conda:
        "../../envs/smaf.yaml"
    threads: 8
    params:
        code=script_code("crf.py"),
        index_rows=rows_of(sam_crf_roles),
        roles=sam_crf_roles,
        settings=sam_crf_settings,  # smaf.settings.CRFSettings, method labels
        out_dir=SAM_CRF.out,
        work_dir=SAM_CRF.work_dir,
    script:
        "../scripts/crf.py"


if not ONE_JOB:

    rule sam_masks_gather:
        input:
            SAM_MASKS.shards,
        output:
            directory(SAM_MASKS.out),
        log:
            "logs/{dataset}/sam_masks.gather.log",
        localrule: True
        conda:
            "../../envs/smaf.yaml"
        params:
            code=script_code("gather_sam.py"),
            kind="masks",
            work_dirs=SAM_MASKS.work_dirs,
        script:
            "../scripts/gather_sam.py"

    rule sam_refine_gather:
        input:
            SAM.shards,
        output:
            directory(SAM.out),
        log:
            "logs/{dataset}/{experiment}/sam/{model}.gather.log",
        wildcard_constraints:
            model="eps|smaf|clip",
        localrule: True
        conda:
            "../../envs/smaf.yaml"
        params:
            code=script_code("gather_sam.py"),
            kind="refine",
            work_dirs=SAM.work_dirs,
        script:
            "../scripts/gather_sam.py"

    rule sam_crf_gather:
        input:
            SAM_CRF.shards,
        output:
            directory(SAM_CRF.out),
        log:
            "logs/{dataset}/{experiment}/sam_crf/{model}.gather.log",
        wildcard_constraints:
            model="eps|smaf|clip",
        localrule: True
        conda:
            "../../envs/smaf.yaml"
        params:
            code=script_code("gather_crf.py"),
            kind="crf",
            work_dirs=SAM_CRF.work_dirs,
        script:
            "../scripts/gather_crf.py"
