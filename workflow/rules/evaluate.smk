# Statistics of generated against real microstructures, per latent size and across them.


rule baselines:
    input:
        dataset="results/dataset/dataset.h5",
    output:
        baselines="results/baselines/baselines.h5",
        figure=report(
            "results/baselines/baselines.png",
            caption="../report/baselines.rst",
            category="4. Evaluation",
            labels={"figure": "baselines"},
        ),
    log:
        "results/logs/baselines.log",
    benchmark:
        "results/benchmarks/baselines.tsv"
    conda:
        "../envs/evaluate.yaml"
    threads: 2
    resources:
        mem_mb=4000,
    params:
        n=config["sample"]["n_prior"],
        calibration=config["sample"]["calibration_draws"],
        seed=config["evaluate"]["seed"],
    shell:
        "python -m microvae baselines --dataset {input.dataset:q} --n {params.n}"
        " --calibration-draws {params.calibration} --seed {params.seed}"
        " --out {output.baselines:q} --figure {output.figure:q} > {log:q} 2>&1"


rule evaluate:
    input:
        samples="results/samples/latent_{latent}/samples.h5",
        dataset="results/dataset/dataset.h5",
        baselines="results/baselines/baselines.h5",
    output:
        metrics="results/evaluation/latent_{latent}/metrics.json",
        curves="results/evaluation/latent_{latent}/curves.csv",
        verdict_png=report(
            "results/evaluation/latent_{latent}/verdict.png",
            caption="../report/verdict.rst",
            category="4. Evaluation",
            subcategory="latent size {latent}",
            labels={"latent size": "{latent}", "figure": "verdict"},
        ),
        curves_png=report(
            "results/evaluation/latent_{latent}/curves.png",
            caption="../report/evaluation.rst",
            category="4. Evaluation",
            subcategory="latent size {latent}",
            labels={"latent size": "{latent}", "figure": "curves"},
        ),
        distributions_png=report(
            "results/evaluation/latent_{latent}/distributions.png",
            caption="../report/evaluation.rst",
            category="4. Evaluation",
            subcategory="latent size {latent}",
            labels={"latent size": "{latent}", "figure": "distributions"},
        ),
    log:
        "results/logs/evaluate/latent_{latent}.log",
    benchmark:
        "results/benchmarks/evaluate/latent_{latent}.tsv"
    conda:
        "../envs/evaluate.yaml"
    threads: 2
    resources:
        mem_mb=4000,
    params:
        options=section_options("evaluate"),
    shell:
        "python -m microvae evaluate --samples {input.samples:q} --dataset {input.dataset:q}"
        " --baselines {input.baselines:q} --latent {wildcards.latent}"
        " --params {params.options:q}"
        " --metrics {output.metrics:q} --curves {output.curves:q}"
        " --verdict-figure {output.verdict_png:q} --curves-figure {output.curves_png:q}"
        " --distributions-figure {output.distributions_png:q} > {log:q} 2>&1"


rule evaluate_large:
    input:
        samples="results/samples/latent_{latent}/samples.h5",
        dataset="results/dataset/dataset.h5",
        baselines="results/baselines/baselines.h5",
    output:
        metrics="results/evaluation/latent_{latent}/large.json",
        figure=report(
            "results/evaluation/latent_{latent}/large.png",
            caption="../report/large.rst",
            category="4. Evaluation",
            subcategory="latent size {latent}",
            labels={"latent size": "{latent}", "figure": "large"},
        ),
    log:
        "results/logs/evaluate_large/latent_{latent}.log",
    benchmark:
        "results/benchmarks/evaluate_large/latent_{latent}.tsv"
    conda:
        "../envs/evaluate.yaml"
    threads: 2
    resources:
        mem_mb=4000,
    params:
        options=section_options("evaluate"),
    shell:
        "python -m microvae evaluate-large --samples {input.samples:q}"
        " --dataset {input.dataset:q} --baselines {input.baselines:q}"
        " --latent {wildcards.latent} --params {params.options:q}"
        " --metrics {output.metrics:q} --figure {output.figure:q} > {log:q} 2>&1"


rule summarize:
    input:
        metrics=expand(
            "results/evaluation/latent_{latent}/metrics.json", latent=LATENTS
        ),
        large=large_metrics(),
        histories=expand("results/models/latent_{latent}/history.csv", latent=LATENTS),
    output:
        table=report(
            "results/evaluation/summary.csv",
            caption="../report/summary.rst",
            category="5. Summary",
            labels={"figure": "summary table"},
        ),
        comparison=report(
            "results/evaluation/latent_comparison.png",
            caption="../report/comparison.rst",
            category="5. Summary",
            labels={"figure": "latent sizes compared"},
        ),
        loss=report(
            "results/evaluation/loss_curves.png",
            caption="../report/loss_all.rst",
            category="5. Summary",
            labels={"figure": "loss curves, all latent sizes"},
        ),
    log:
        "results/logs/summarize.log",
    benchmark:
        "results/benchmarks/summarize.tsv"
    conda:
        "../envs/evaluate.yaml"
    params:
        latents=" ".join(str(latent) for latent in LATENTS),
    shell:
        "python -m microvae summarize --metrics {input.metrics:q} --histories {input.histories:q}"
        " --latents {params.latents} --table {output.table:q}"
        " --comparison-figure {output.comparison:q} --loss-figure {output.loss:q}"
        " --large-metrics {input.large:q} > {log:q} 2>&1"


# 3-D (volume.enabled): generated volumes judged section by section along each axis against
# the test split's volumes, beside blurred noise and the val volumes.
rule evaluate_volumes:
    input:
        volumes=generated_volumes(),
        dataset="results/dataset/dataset.h5",
    output:
        metrics="results/evaluation/volumes.json",
        figure=report(
            "results/evaluation/volumes.png",
            caption="../report/volumes.rst",
            category="4. Evaluation",
            labels={"figure": "volumes, section by section"},
        ),
    log:
        "results/logs/evaluate_volumes.log",
    benchmark:
        "results/benchmarks/evaluate_volumes.tsv"
    conda:
        "../envs/evaluate.yaml"
    threads: 1
    resources:
        mem_mb=4000,
    params:
        seed=config["evaluate"]["seed"],
    shell:
        "python -m microvae evaluate-volumes --volumes {input.volumes:q}"
        " --dataset {input.dataset:q} --seed {params.seed} --out {output.metrics:q}"
        " --figure {output.figure:q} > {log:q} 2>&1"
