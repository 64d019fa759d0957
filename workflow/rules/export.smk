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


# 3-D (volume.enabled): volumes of volume.shape from the conv3d model's priors (set = a mode) or
# from its diffusion prior at a target phase fraction (set = target_{fraction}), as .vti for
# DAMASK and ParaView (voxel size of the first source with a pixel_size).
rule generate_volume:
    input:
        "results/models/volume/model.pt",
    output:
        volume="results/volumes/{set}_{index}.vti",
        report="results/volumes/{set}_{index}.json",
    log:
        "results/logs/generate_volume/{set}_{index}.log",
    benchmark:
        "results/benchmarks/generate_volume/{set}_{index}.tsv"
    wildcard_constraints:
        set=r"diffusion|field|prior|target_0\.\d+",
    conda:
        "../envs/model.yaml"
    threads: 2
    resources:
        mem_mb=4000,
    params:
        mode=volume_mode_options,
        shape=" ".join(map(str, config["volume"]["shape"])),
        seed=lambda wildcards: config["volume"]["seed"] + int(wildcards.index),
        periodic="" if config["volume"]["periodic"] else "--no-periodic",
        pixel=volume_pixel_options(),
    shell:
        "python -m microvae volume --model {input:q} {params.mode}"
        " --shape {params.shape} --seed {params.seed} {params.periodic} {params.pixel}"
        " --out {output.volume:q} --report {output.report:q} > {log:q} 2>&1"
