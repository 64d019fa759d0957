# Generation per latent size: prior, aggregate and mixture (Table 1) or field and diffusion
# (conv), posterior (eq. 1), latent noise, interpolation; conv models also at sample.sizes.


rule sample:
    input:
        model="results/models/latent_{latent}/model.pt",
        dataset="results/dataset/dataset.h5",
        diffusion=diffusion_prior,
    output:
        samples="results/samples/latent_{latent}/samples.h5",
        prior=report(
            "results/samples/latent_{latent}/prior.png",
            caption="../report/samples.rst",
            category="3. Generation",
            subcategory="latent size {latent}",
            labels={"latent size": "{latent}", "figure": "prior"},
        ),
        posterior=report(
            "results/samples/latent_{latent}/posterior.png",
            caption="../report/samples.rst",
            category="3. Generation",
            subcategory="latent size {latent}",
            labels={"latent size": "{latent}", "figure": "posterior"},
        ),
        noise=report(
            "results/samples/latent_{latent}/noise.png",
            caption="../report/samples.rst",
            category="3. Generation",
            subcategory="latent size {latent}",
            labels={"latent size": "{latent}", "figure": "noise"},
        ),
        interpolation=report(
            "results/samples/latent_{latent}/interpolation.png",
            caption="../report/samples.rst",
            category="3. Generation",
            subcategory="latent size {latent}",
            labels={"latent size": "{latent}", "figure": "interpolation"},
        ),
        latent_map=report(
            "results/samples/latent_{latent}/latent_map.png",
            caption="../report/samples.rst",
            category="3. Generation",
            subcategory="latent size {latent}",
            labels={"latent size": "{latent}", "figure": "latent_map"},
        ),
    log:
        "results/logs/sample/latent_{latent}.log",
    benchmark:
        "results/benchmarks/sample/latent_{latent}.tsv"
    conda:
        "../envs/model.yaml"
    threads: 2
    resources:
        mem_mb=4000,
    params:
        options=sample_options(),
        diffusion_prior=diffusion_prior_option,
    shell:
        "python -m microvae sample --model {input.model:q} --dataset {input.dataset:q} --mode all"
        " --params {params.options:q} {params.diffusion_prior} --out {output.samples:q}"
        " --prior-figure {output.prior:q} --posterior-figure {output.posterior:q}"
        " --noise-figure {output.noise:q} --interpolation-figure {output.interpolation:q}"
        " --latent-map-figure {output.latent_map:q} > {log:q} 2>&1"
