"""python -m recbole_genair.archetype --dataset=<name> [--config_files="a.yaml b.yaml"] [--key=value ...]

Writes <dataset>.archetype and <dataset>.itememb; resumable (rerun the same command after a crash).
--shard=i/n processes a part of the catalogue; --merge=True joins the shards and writes the outputs;
--shards=n runs n shards at once (cores / n threads each) and merges them, in one command;
--pca_only=True redoes PCA and the .itememb from the stored raw vectors without the LLM.
Settings and their defaults: props/archetype.yaml.
"""
import argparse
import logging
import sys

from recbole_genair.archetype.pipeline import format_summary, run_archetype
from recbole_genair.archetype.settings import load_settings
from recbole_genair.archetype.shards import run_shards


def main(argv=None):
    # no abbreviations: --data=x must not quietly become --dataset=x; unknown keys go to load_settings
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     allow_abbrev=False)
    parser.add_argument("--dataset", "-d", required=True)
    parser.add_argument("--config_files", default=None, help="YAML files separated by spaces")
    args, rest = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    files = args.config_files.split() if args.config_files else None
    settings = load_settings(args.dataset, files, cmd_args=rest)
    summary = run_shards(settings) if settings.get("shards") is not None else run_archetype(settings)
    print(format_summary(summary))
    return summary


if __name__ == "__main__":
    main()
