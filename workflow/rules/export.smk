# Generated (and real) phase maps for simulation: .vti for ParaView and DAMASK, PNG, TIFF,
# NPY (with sample.sizes).


rule export:
    input:
        samples="results/samples/latent_{latent}/samples.h5",
        dataset="results/dataset/dataset.h5",
    output:
        directory("results/export/latent_{latent}"),
    log:
        "results/logs/export/latent_{latent}.log",
    benchmark:
        "results/benchmarks/export/latent_{latent}.tsv"
    conda:
        "../envs/evaluate.yaml"
    params:
        options=section_options("export"),
    shell:
        "python -m microvae export --samples {input.samples:q} --dataset {input.dataset:q}"
        " --params {params.options:q} --out-dir {output:q} > {log:q} 2>&1"


# 3-D (volume.enabled): volumes of volume.shape from the conv3d model's priors, as .vti for
# DAMASK and ParaView (voxel size of the first source with a pixel_size).
rule generate_volume:
    input:
        "results/models/volume/model.pt",
    output:
        volume="results/volumes/{mode}_{index}.vti",
        report="results/volumes/{mode}_{index}.json",
    log:
        "results/logs/generate_volume/{mode}_{index}.log",
    benchmark:
        "results/benchmarks/generate_volume/{mode}_{index}.tsv"
    wildcard_constraints:
        mode="diffusion|field|prior",
    conda:
        "../envs/model.yaml"
    threads: 2
    resources:
        mem_mb=4000,
    params:
        shape=" ".join(map(str, config["volume"]["shape"])),
        seed=lambda wildcards: config["volume"]["seed"] + int(wildcards.index),
        periodic="" if config["volume"]["periodic"] else "--no-periodic",
        pixel=volume_pixel_options(),
    shell:
        "python -m microvae volume --model {input:q} --mode {wildcards.mode}"
        " --shape {params.shape} --seed {params.seed} {params.periodic} {params.pixel}"
        " --out {output.volume:q} --report {output.report:q} > {log:q} 2>&1"


rule generate_volume_at_target:
    input:
        "results/models/volume/model.pt",
    output:
        volume="results/volumes/target_{fraction}_{index}.vti",
        report="results/volumes/target_{fraction}_{index}.json",
    log:
        "results/logs/generate_volume/target_{fraction}_{index}.log",
    benchmark:
        "results/benchmarks/generate_volume/target_{fraction}_{index}.tsv"
    wildcard_constraints:
        fraction=r"0\.\d+",
    conda:
        "../envs/model.yaml"
    threads: 2
    resources:
        mem_mb=4000,
    params:
        shape=" ".join(map(str, config["volume"]["shape"])),
        seed=lambda wildcards: config["volume"]["seed"] + int(wildcards.index),
        periodic="" if config["volume"]["periodic"] else "--no-periodic",
        pixel=volume_pixel_options(),
    shell:
        "python -m microvae volume --model {input:q} --mode diffusion"
        " --phase-fraction {wildcards.fraction} --shape {params.shape} --seed {params.seed}"
        " {params.periodic} {params.pixel} --out {output.volume:q}"
        " --report {output.report:q} > {log:q} 2>&1"
