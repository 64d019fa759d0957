# Data path: synthetic volumes -> grey tiles -> binary tiles -> train/val/test data set.


rule synthesize:
    output:
        iq="results/raw/{source}/volume_{index}_iq.tif",
        phase="results/raw/{source}/volume_{index}_phase.tif",
    log:
        "results/logs/synthesize/{source}_{index}.log",
    benchmark:
        "results/benchmarks/synthesize/{source}_{index}.tsv"
    conda:
        "../envs/data.yaml"
    resources:
        mem_mb=2000,
    params:
        generator=synthetic_options,
        seed=synthetic_seed,
    shell:
        "python -m microvae synthesize --params {params.generator:q} --seed {params.seed}"
        " --iq {output.iq:q} --phase {output.phase:q} > {log:q} 2>&1"


rule ingest:
    input:
        images=source_images,
        truth=source_truth,
    output:
        "results/ingested/{source}.h5",
    log:
        "results/logs/ingest/{source}.log",
    benchmark:
        "results/benchmarks/ingest/{source}.tsv"
    conda:
        "../envs/data.yaml"
    resources:
        mem_mb=ingest_mem_mb,
    params:
        source=ingest_options,
        image_size=config["image_size"],
    shell:
        "python -m microvae ingest --files {input.images:q} --truth {input.truth:q}"
        " --source {params.source:q} --image-size {params.image_size}"
        " --out {output:q} > {log:q} 2>&1"


rule segment:
    input:
        "results/ingested/{source}.h5",
    output:
        h5="results/segmented/{source}.h5",
        qa="results/segmented/{source}_qa.json",
        figure=report(
            "results/segmented/{source}_examples.png",
            caption="../report/segmentation.rst",
            category="1. Data",
            labels={"source": "{source}", "figure": "segmentation"},
        ),
    log:
        "results/logs/segment/{source}.log",
    benchmark:
        "results/benchmarks/segment/{source}.tsv"
    conda:
        "../envs/data.yaml"
    resources:
        mem_mb=segment_mem_mb,
    params:
        segmentation=segmentation_options,
    shell:
        "python -m microvae segment --input {input:q} --params {params.segmentation:q}"
        " --out {output.h5:q} --qa {output.qa:q} --figure {output.figure:q} > {log:q} 2>&1"


rule pack:
    input:
        expand("results/segmented/{source}.h5", source=SOURCES),
    output:
        h5="results/dataset/dataset.h5",
        figure=report(
            "results/dataset/split.png",
            caption="../report/split.rst",
            category="1. Data",
            labels={"figure": "train/val/test split"},
        ),
    log:
        "results/logs/pack.log",
    benchmark:
        "results/benchmarks/pack.tsv"
    conda:
        "../envs/data.yaml"
    resources:
        mem_mb=pack_mem_mb,
    params:
        fractions=split_fractions(),
        seed=config["split"]["seed"],
    shell:
        "python -m microvae pack --inputs {input:q} --fractions {params.fractions:q}"
        " --seed {params.seed} --out {output.h5:q} --figure {output.figure:q} > {log:q} 2>&1"
