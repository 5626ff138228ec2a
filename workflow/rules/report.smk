# The report. One rule per figure family computes figures under
# results/{dataset}/{experiment}/figures/ (through the pipeline's own functions); the `report`
# rule only assembles: results/report.html, one self-contained page with the paper's tables
# (Table 1: DeepLab on val, Table 2: pseudo labels on train, Tables 3-5: ablations when
# results/{dataset}/ablations.csv exists), per-class IoU, training curves and Figures 1, 3, 4, 5,
# and the tables as pages of their own under results/{dataset}/tables/.
# Outputs flagged with report() make up Snakemake's report: `snakemake --report report.html`
# (captions in workflow/report/). Input functions (figure_*, report_*) live in
# common_outputs.smk.
# Only figure_scales runs a network (gpu=1); the others read files and run where Snakemake runs.


report: "../report/workflow.rst"


#: Experiment whose figures the one-page report shows (the tables cover every experiment).
REPORT_EXPERIMENT = next(iter(config["experiments"]))
#: The ablation table (rule ablations), shown when present: a param, not an input, so the
#: report never forces the ablation runs.
REPORT_ABLATIONS = f"results/{DATASET}/ablations.csv"
#: The threshold sweeps (rule sweep_thr, `snakemake thr_sweep`) of the listed runs: read when
#: present (Table 2's notes say whether its thr was tuned on held-out data), never required.
REPORT_THR_SWEEPS = [f"results/{DATASET}/{run}/thr_sweep.json" for run in EXP.runs()]
#: The figures of one experiment (file stems; smaf.report.page.FIGURES), in the paper's order.
#: Fig. 1 and 4 show a classifier teacher's scales: none on the CLIP base (the report notes
#: them as not available); Fig. 3 shows the base's (CLIP's) maps beside SMAF's there.
REPORT_FIGURES = tuple(
    name
    for name in (
        "fig1_scales",
        "fig3_eps_vs_smaf",
        "fig4_reactivation",
        "fig5a_pseudo_labels",
        "fig5b_segmentation",
    )
    if not (CLIP_BASE and name in ("fig1_scales", "fig4_reactivation"))
)
#: Files of the tables (smaf.report.page.TABLE_FILES), beside their CSV where they have one.
REPORT_TABLES = {
    "table1_segmentation": "Table 1",
    "table2_pseudo_labels": "Table 2",
    "per_class_iou": "Per-class IoU",
    "ablations": "Tables 3-5",
}


rule figure_scales:
    input:
        unpack(thr_auto_input("self_train", "teacher")),
        index=index_input,
        eps_model="results/{dataset}/pretrain/model.pt",
        smaf_model="results/{dataset}/{experiment}/self_train/model.pt",
    output:
        fig1=report(
            "results/{dataset}/{experiment}/figures/fig1_scales.png",
            caption="../report/fig1_scales.rst",
            category="Figures",
            subcategory="{experiment}",
            labels={"figure": "Fig. 1", "experiment": "{experiment}"},
        ),
        fig4=report(
            "results/{dataset}/{experiment}/figures/fig4_reactivation.png",
            caption="../report/fig4_reactivation.rst",
            category="Figures",
            subcategory="{experiment}",
            labels={"figure": "Fig. 4", "experiment": "{experiment}"},
        ),
        # The plotted maps (the fused column = smaf.cam.class_maps of the teacher).
        maps="results/{dataset}/{experiment}/figures/fig1_fig4_maps.npz",
    log:
        "logs/{dataset}/{experiment}/figures/scales.log",
    conda:
        "../../envs/smaf.yaml"
    threads: 2
    resources:
        gpu=1,
    params:
        code=script_code("figure_scales.py"),
        index_rows=rows_of(lambda wildcards: [figure_split(wildcards)]),
        # What the teacher computes (Fig. 4 shows its target).
        cam=experiment_field("self_train", "teacher_cam"),
        thr=experiment_field("self_train", "thr"),
        role=figure_split,
    script:
        "../scripts/figure_scales.py"


rule figure_eps_smaf:
    input:
        unpack(figure_seed_inputs),
    output:
        report(
            "results/{dataset}/{experiment}/figures/fig3_eps_vs_smaf.png",
            caption="../report/fig3_eps_vs_smaf.rst",
            category="Figures",
            subcategory="{experiment}",
            labels={"figure": "Fig. 3", "experiment": "{experiment}"},
        ),
    log:
        "logs/{dataset}/{experiment}/figures/eps_smaf.log",
    localrule: True
    conda:
        "../../envs/smaf.yaml"
    params:
        code=script_code("figure_eps_smaf.py"),
        index_rows=rows_of(lambda wildcards: [figure_split(wildcards)]),
        role=figure_split,
        base=EXP.base.upper(),  # the titles' EPS, CAM or CLIP
    script:
        "../scripts/figure_eps_smaf.py"


rule figure_labels:
    input:
        unpack(figure_label_inputs),
    output:
        train=report(
            "results/{dataset}/{experiment}/figures/fig5a_pseudo_labels.png",
            caption="../report/fig5a_pseudo_labels.rst",
            category="Figures",
            subcategory="{experiment}",
            labels={"figure": "Fig. 5a", "experiment": "{experiment}"},
        ),
        val=report(
            "results/{dataset}/{experiment}/figures/fig5b_segmentation.png",
            caption="../report/fig5b_segmentation.rst",
            category="Figures",
            subcategory="{experiment}",
            labels={"figure": "Fig. 5b", "experiment": "{experiment}"},
        ),
    log:
        "logs/{dataset}/{experiment}/figures/labels.log",
    localrule: True
    conda:
        "../../envs/smaf.yaml"
    params:
        code=script_code("figure_labels.py"),
        index_rows=rows_of(lambda wildcards: [figure_split(wildcards), "val"]),
        label_dirs=figure_label_dirs,
        pred_dirs=figure_pred_dirs,
        train_role=figure_split,
    script:
        "../scripts/figure_labels.py"


rule figure_curves:
    input:
        histories=curve_histories,
        index=index_input,
    output:
        png="results/{dataset}/{experiment}/figures/curves.png",
        svg=report(
            "results/{dataset}/{experiment}/figures/curves.svg",
            caption="../report/curves.rst",
            category="Training curves",
            labels={"experiment": "{experiment}"},
        ),
    log:
        "logs/{dataset}/{experiment}/figures/curves.log",
    localrule: True
    conda:
        "../../envs/smaf.yaml"
    params:
        code=script_code("figure_curves.py"),
        index_rows=rows_of(["train_aug"]),
    script:
        "../scripts/figure_curves.py"


rule report:
    input:
        summary="results/summary.csv",
        index=dataset_index(DATASET),
        evals=report_evals(REPORT_EXPERIMENT),
        figures=expand(
            "results/{dataset}/{experiment}/figures/{name}.png",
            dataset=DATASET,
            experiment=REPORT_EXPERIMENT,
            name=REPORT_FIGURES,
        ),
        # One figure per experiment: pretraining, then its self-training and DeepLab.
        curves=expand(
            "results/{dataset}/{experiment}/figures/curves.png",
            dataset=DATASET,
            experiment=config["experiments"],
        ),
    output:
        # Not in Snakemake's report: it holds the same figures and tables, and a data: URL of
        # its size (MBs of embedded PNGs) is beyond what browsers show in a single-file report.
        page="results/report.html",
        tables=[
            report(
                f"results/{DATASET}/tables/{stem}.html",
                caption=f"../report/{stem}.rst",
                category="Tables",
                labels={"table": name},
            )
            for stem, name in REPORT_TABLES.items()
        ],
        csv=[
            f"results/{DATASET}/tables/{stem}.csv"
            for stem in REPORT_TABLES
            if stem != "ablations"
        ],
    log:
        "logs/report.log",
    localrule: True
    conda:
        "../../envs/smaf.yaml"
    params:
        code=script_code("report.py"),
        index_rows=rows_of(ALL_ROLES, dataset=DATASET),
        templates=templates_code(),
        dataset=DATASET,
        # Without ground-truth masks nothing is scored: the page says so once.
        masks=EXP.has_masks(DATASET),
        experiments=list(config["experiments"]),
        # Optional: built by the `ablations` rule; read if present, never required. Its
        # modification time is a param, so the next run after `snakemake ablations` redoes
        # the report with the tables.
        ablations=REPORT_ABLATIONS,
        ablations_mtime=(
            os.path.getmtime(REPORT_ABLATIONS)
            if os.path.exists(REPORT_ABLATIONS)
            else None
        ),
        thr_sweeps=REPORT_THR_SWEEPS,
        thr_sweeps_mtime=[
            os.path.getmtime(p) if os.path.exists(p) else None
            for p in REPORT_THR_SWEEPS
        ],
    script:
        "../scripts/report.py"
