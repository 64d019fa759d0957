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
