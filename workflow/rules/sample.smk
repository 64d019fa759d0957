# Generation per latent size: prior, aggregate and mixture (Table 1) or field (conv), posterior
# (eq. 1), latent noise, interpolation; conv models also at sample.sizes.


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
        n_prior=config["sample"]["n_prior"],
        n_images=config["sample"]["n_posterior_images"],
        n_draws=config["sample"]["n_draws"],
        sigmas=" ".join(str(s) for s in config["sample"]["noise_sigmas"]),
        n_pairs=config["sample"]["n_pairs"],
        n_steps=config["sample"]["n_steps"],
        seed=config["sample"]["seed"],
        calibration=config["sample"]["calibration_draws"],
        large=large_sample_options(),
        diffusion_prior=diffusion_prior_option,
        diffusion=diffusion_sample_options(),
        finish=(
            "--match-training"
            if config["sample"]["match_training"]
            else "--no-match-training"
        ),
    shell:
        "python -m microvae sample --model {input.model:q} --dataset {input.dataset:q} --mode all"
        " --n {params.n_prior} --n-images {params.n_images} --draws {params.n_draws}"
        " --sigmas {params.sigmas} --pairs {params.n_pairs} --steps {params.n_steps}"
        " --seed {params.seed} --calibration-draws {params.calibration} {params.large}"
        " {params.diffusion_prior} {params.diffusion}"
        " {params.finish} --out {output.samples:q}"
        " --prior-figure {output.prior:q} --posterior-figure {output.posterior:q}"
        " --noise-figure {output.noise:q} --interpolation-figure {output.interpolation:q}"
        " --latent-map-figure {output.latent_map:q} > {log:q} 2>&1"


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
        formats=" ".join(config["export"]["formats"]),
        n=config["export"]["n"],
        real="--real" if config["export"]["real"] else "--no-real",
    shell:
        "python -m microvae export --samples {input.samples:q} --dataset {input.dataset:q}"
        " --format {params.formats} --n {params.n} {params.real} --out-dir {output:q}"
        " > {log:q} 2>&1"
