# One VAE per latent size. The resumable checkpoint lives outside the declared outputs
# (results/checkpoints/), so a killed job continues where it stopped when it is re-run.
# With model.architecture auto the job chooses the model from the data (its log says which).


rule train:
    input:
        "results/dataset/dataset.h5",
    output:
        model="results/models/latent_{latent}/model.pt",
        history="results/models/latent_{latent}/history.csv",
        loss=report(
            "results/models/latent_{latent}/loss.png",
            caption="../report/loss.rst",
            category="2. Training",
            labels={"latent size": "{latent}", "figure": "loss curves"},
        ),
    log:
        "results/logs/train/latent_{latent}.log",
    benchmark:
        "results/benchmarks/train/latent_{latent}.tsv"
    conda:
        "../envs/model.yaml"
    threads: config["train"]["threads"]
    resources:
        mem_mb=config["train"]["mem_mb"],
        # minutes; a retry after a time-limit kill gets more time and resumes the checkpoint
        runtime=lambda wildcards, attempt: config["train"]["runtime"] * attempt,
        gpu=config["train"]["gpus"],
    params:
        training=training_options(),
        checkpoint_dir=lambda wildcards: f"results/checkpoints/latent_{wildcards.latent}",
    shell:
        "python -m microvae train --dataset {input:q} --latent {wildcards.latent}"
        " --params {params.training:q} --threads {threads}"
        " --checkpoint-dir {params.checkpoint_dir:q} --model {output.model:q}"
        " --history {output.history:q} --loss-figure {output.loss:q} > {log:q} 2>&1"


# The learned prior (mode diffusion): over the latent grids of encoded training windows (conv
# models) or the latent vectors of the training images (Table 1 models).
rule train_prior:
    input:
        model="results/models/latent_{latent}/model.pt",
        dataset="results/dataset/dataset.h5",
    output:
        prior="results/models/latent_{latent}/diffusion.pt",
        loss=report(
            "results/models/latent_{latent}/diffusion_loss.png",
            caption="../report/diffusion_loss.rst",
            category="2. Training",
            labels={"latent size": "{latent}", "figure": "diffusion prior loss"},
        ),
    log:
        "results/logs/train_prior/latent_{latent}.log",
    benchmark:
        "results/benchmarks/train_prior/latent_{latent}.tsv"
    conda:
        "../envs/model.yaml"
    threads: config["train"]["threads"]
    resources:
        mem_mb=config["train"]["mem_mb"],
        runtime=lambda wildcards, attempt: config["train"]["runtime"] * attempt,
        gpu=config["train"]["gpus"],
    params:
        settings=diffusion_options(),
    shell:
        "python -m microvae train-prior --model {input.model:q} --dataset {input.dataset:q}"
        " --params {params.settings:q} --threads {threads} --out {output.prior:q}"
        " --loss-figure {output.loss:q} > {log:q} 2>&1"


# 3-D (volume.enabled): a conv3d VAE on the train split's volumes, with its field and
# diffusion priors over 3-D latent grids, in one model file.
rule train_volume:
    input:
        "results/dataset/dataset.h5",
    output:
        model="results/models/volume/model.pt",
        report="results/models/volume/training.json",
    log:
        "results/logs/train_volume.log",
    benchmark:
        "results/benchmarks/train_volume.tsv"
    conda:
        "../envs/model.yaml"
    threads: config["volume"]["threads"] or config["train"]["threads"]
    resources:
        mem_mb=config["train"]["mem_mb"],
        runtime=lambda wildcards, attempt: config["train"]["runtime"] * attempt,
        gpu=config["train"]["gpus"],
    params:
        settings=volume_training_options(),
    shell:
        "python -m microvae train-volume --dataset {input:q} --params {params.settings:q}"
        " --threads {threads} --out {output.model:q} --report {output.report:q} > {log:q} 2>&1"
