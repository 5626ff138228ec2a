# Downloads (resumable, retried, checksum-verified), safe extraction, and manual items.


rule download:
    output:
        "resources/downloads/{file}",
    log:
        "logs/downloads/{file}.log",
    wildcard_constraints:
        file="|".join(re.escape(f) for f in config["downloads"]),
    cache: "omit-software"
    retries: 2
    localrule: True
    conda:
        "../../envs/smaf.yaml"
    params:
        url=download_field("url"),
        md5=download_field("md5"),
        sha256=download_field("sha256"),
        key="{file}",
        retries=3,
    script:
        "../scripts/download.py"


rule extract_voc2012:
    input:
        archive="resources/downloads/VOCtrainval_11-May-2012.tar",
    output:
        marker="resources/{dataset}/VOCtrainval.extracted",
    log:
        "logs/{dataset}/extract_voc2012.log",
    localrule: True
    conda:
        "../../envs/smaf.yaml"
    params:
        dest=voc_extract_dest,
        strip_components=0,
    script:
        "../scripts/extract.py"


rule extract_segmentation_class_aug:
    input:
        archive="resources/downloads/SegmentationClassAug.zip",
    output:
        marker="resources/{dataset}/SegmentationClassAug.zip.extracted",
    log:
        "logs/{dataset}/extract_segmentation_class_aug.log",
    localrule: True
    conda:
        "../../envs/smaf.yaml"
    params:
        dest=aug_extract_dest,
        strip_components=0,
    script:
        "../scripts/extract.py"


# The DeepLab authors' ResNet-101 release (init.caffemodel: the COCO init of Table 1's
# DeepLab); deeplab.pretrained files in this folder depend on its marker (weights_input).
rule extract_deeplab_init:
    input:
        archive="resources/downloads/prototxt_and_model.zip",
    output:
        marker="resources/weights/deeplab_resnet101.extracted",
    log:
        "logs/weights/extract_deeplab_init.log",
    localrule: True
    conda:
        "../../envs/smaf.yaml"
    params:
        # resources/weights/deeplab_resnet101: the marker's name without its suffix.
        dest=lambda wildcards, output: os.path.splitext(output.marker)[0],
        strip_components=0,
    script:
        "../scripts/extract.py"


rule convert_sbd:
    input:
        archive="resources/downloads/benchmark.tgz",
    output:
        marker="resources/{dataset}/SegmentationClassAug.sbd.extracted",
    log:
        "logs/{dataset}/convert_sbd.log",
    localrule: True
    conda:
        "../../envs/smaf.yaml"
    params:
        code=script_code("convert_sbd.py"),
        workdir="resources/{dataset}/sbd",
        out_dir=aug_mask_dir,
    script:
        "../scripts/convert_sbd.py"


rule manual_item:
    output:
        "resources/manual/{item}.ok",
    log:
        "logs/manual/{item}.log",
    wildcard_constraints:
        item="|".join(re.escape(i) for i in config["manual"]),
    localrule: True
    conda:
        "../../envs/smaf.yaml"
    params:
        name="{item}",
        path=manual_field("path"),
        instructions=manual_field("instructions"),
    script:
        "../scripts/manual_item.py"
