# protrnn pipeline: real structures -> contact datasets -> recurrent model grid -> evaluation -> report -> predictions.
#
#   snakemake --cores 2                                    # default config (embedded data, < 30 min on 2 CPU cores)
#   snakemake --cores 16 --configfile workflows/config.full.yaml
#   snakemake --profile workflows/profiles/slurm --configfile workflows/config.full.yaml
#   snakemake pretrain --cores 2                           # only the pretrained encoder (pretrain.enabled)
#   snakemake bundle --cores 2 --configfile workflows/config.bundle.yaml   # retrain the shipped bundled model
#   snakemake bundle --cores 2                             # a quick bundled model on the default data
#
# Rules live in workflows/rules/*.smk; the configuration is validated against workflows/schemas/config.schema.yaml.

from snakemake.utils import min_version, validate

min_version("8.0")


# A --configfile replaces this default instead of being merged into it: Snakemake merges nested keys, which would carry
# the default grid's models, `optional: true` test sets and the 15-minute bundle settings into e.g. config.full.yaml.
# It is found from the checkout (the Snakefile's folder), so that `snakemake -s CHECKOUT/Snakefile -d DIR` runs the
# default config in another working directory.
if not workflow.config_settings.configfiles:

    configfile: f"{workflow.basedir}/workflows/config.yaml"


# A schema error in one line that names the key (Snakemake's own message prints the whole schema and config), then
# Snakemake's validation, which also fills in the schema's defaults.
include: "workflows/rules/schema.smk"


validate(config, "workflows/schemas/config.schema.yaml")


include: "workflows/rules/common.smk"
include: "workflows/rules/data.smk"
include: "workflows/rules/pretrain.smk"
include: "workflows/rules/train.smk"
include: "workflows/rules/evaluate.smk"
include: "workflows/rules/report.smk"
include: "workflows/rules/predict.smk"
include: "workflows/rules/bundle.smk"


rule all:
    default_target: True
    input:
        f"{RESULTS}/report/report.html",
        expand(f"{RESULTS}/predict/{{fasta}}/summary.tsv", fasta=list(PREDICT_FASTA)),
        list(PRETRAIN_ENCODER.values()) if PRETRAIN_ENABLED else [],
