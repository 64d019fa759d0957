# microvae: raw microstructure images -> binary phase maps -> VAE per latent size ->
# generated microstructures -> statistics against the real ones -> report.
from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/sample.smk"
include: "workflow/rules/evaluate.smk"


rule all:
    default_target: True
    input:
        all_targets(),


onsuccess:
    print_warnings("results/logs")
