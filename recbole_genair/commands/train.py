"""Train and evaluate: one run, or a comparison, an ablation table or a hyper-parameter search.

    python run_recbole_genair.py --model=SASRecGenAIR --dataset=ml-100k --epochs=5
    python run_recbole_genair.py --compare --models=SASRec,SASRecGenAIR --dataset=ml-100k --seeds=3

Any other `--key=value` is a RecBole setting; `--config_files` takes YAML files separated by spaces.
"""
import argparse
import sys

from recbole_genair.commands.compare import WorkerFailed, run_comparison
from recbole_genair.commands.distributed import distributed_settings, run_distributed
from recbole_genair.commands.tune import run_tuning
from recbole_genair.evaluation.compare import ablation_report, parse_seeds, write_report
from recbole_genair.evaluation.reference import load_reference, reference_line
from recbole_genair.paths import PROPS_DIR
from recbole_genair.quick_start import run_recbole_genair
from recbole_genair.threads import ThreadsError

# Flags of one mode only; given in another mode they would be ignored, so they are refused.
MODE_FLAGS = {
    "compare": ("models", "seeds", "extra_test_modes", "report_only", "output", "workers"),
    "ablation": ("seeds", "extra_test_modes", "output", "model"),
    "tune": ("params_file", "algo", "max_evals", "output", "model"),
    "run": ("model",),
}


def parse_args(argv):
    """(flags, RecBole `--key=value` pairs); flags are never abbreviated (`--seed` is not `--seeds`)."""
    parser = argparse.ArgumentParser(
        description="Train and evaluate a recbole_genair or RecBole model. Any other --key=value pair is a "
        "RecBole config setting (e.g. --epochs=5 --train_batch_size=512).",
        allow_abbrev=False,
    )
    parser.add_argument("--model", "-m", default=None, help="model name, ours or RecBole's (default SASRecGenAIR)")
    parser.add_argument("--dataset", "-d", default="ml-100k", help="dataset name")
    parser.add_argument("--config_files", default=None, help="YAML files, separated by spaces")
    parser.add_argument("--compare", action="store_true", help="compare --models over --seeds (see README)")
    parser.add_argument("--models", default=None, help="comma-separated; default SASRec,SASRecGenAIR")
    parser.add_argument("--seeds", default=None,
                        help="a count up to 100 (seeds 2020, 2021, ...) or a comma-separated list (one seed: 2022,); "
                        "default 3")
    parser.add_argument("--output", default=None, help="output folder of --compare / --tune (default results/...)")
    parser.add_argument("--extra_test_modes", default=None,
                        help="--compare: also test the trained models under these protocols, e.g. uni100")
    parser.add_argument("--workers", default=None,
                        help="--compare: train this many (model, seed) runs at once, one process each, with the "
                             "machine's cores shared among them (threads); default 1")
    parser.add_argument("--report_only", action="store_true",
                        help="--compare: write the report from the finished runs in --output, train nothing")
    parser.add_argument("--ablation", default="",
                        help="label=folder,... of --compare outputs: one table of --model's runs across them")
    parser.add_argument("--tune", action="store_true", help="search hyper-parameters with RecBole's HyperTuning")
    parser.add_argument("--params_file", default=None,
                        help="search space (RecBole format); default: the paper's grid in props/tuning/genair.hyper")
    parser.add_argument("--algo", default=None, help="exhaustive (default) | random | bayes")
    parser.add_argument("--max_evals", type=int, default=None, help="trials at most (default 100)")
    args, rest = parser.parse_known_args(argv)
    check_flags(args, rest)
    return args, rest


def _mode(args):
    modes = [m for m in ("compare", "tune") if getattr(args, m)] + (["ablation"] if args.ablation else [])
    if len(modes) > 1:
        raise SystemExit(f"error: --{' and --'.join(modes)} cannot be combined; run them one after the other")
    return modes[0] if modes else "run"


def check_flags(args, rest):
    """Refuse flags that the chosen mode would ignore, and `--seed` where `--seeds` sets it."""
    mode = _mode(args)
    given = [f for f in ("models", "seeds", "extra_test_modes", "output", "params_file", "algo", "max_evals", "model",
                         "workers")
             if getattr(args, f) is not None] + (["report_only"] if args.report_only else [])
    ignored = [f for f in given if f not in MODE_FLAGS[mode]]
    if ignored:
        uses = {f: sorted(m for m, flags in MODE_FLAGS.items() if f in flags) for f in ignored}
        hint = "; ".join(f"--{f} belongs to {' / '.join('--' + m if m != 'run' else 'a single run' for m in ms)}"
                         for f, ms in uses.items())
        hint += ". A comparison takes --models, a single run --model." if "model" in ignored or "models" in ignored else "."
        raise SystemExit(f"error: {', '.join('--' + f for f in ignored)} would be ignored here: {hint}")
    if rest and (mode == "ablation" or args.report_only):
        raise SystemExit(f"error: {' '.join(rest)} would be ignored: --{'ablation' if mode == 'ablation' else 'report_only'} "
                         f"reads finished runs and trains nothing")
    if mode != "run" and distributed_settings(rest) is not None:
        raise SystemExit(f"error: --nproc / --world_size train one model on several processes; --{mode} runs its "
                         f"trainings one process each (--compare --workers=N trains N of them at once instead)")
    seed = next((a for a in rest if a.startswith("--seed=")), None)
    if seed and mode == "compare":
        raise SystemExit(f"error: {seed} would be replaced by each seed of --seeds in --{mode}; "
                         f"give --seeds={seed.split('=', 1)[1]}, for this one seed")


def split_config_files(value):
    """`--config_files` as a list of files: any run of spaces separates two (None when not given)."""
    return (value or "").split() or None


def main(argv=None):
    """Parse `argv` (default `sys.argv[1:]`) and run, compare, tabulate an ablation or tune."""
    args, rest = parse_args(sys.argv[1:] if argv is None else argv)
    config_files = split_config_files(args.config_files)
    seeds = args.seeds or "3"
    extra = [m for m in (args.extra_test_modes or "").split(",") if m]
    if args.compare:
        output = args.output or f"results/compare-{args.dataset}"
        models = [m for m in (args.models or "SASRec,SASRecGenAIR").split(",") if m]
        if args.report_only:
            return write_report(output, models, parse_seeds(seeds), extra)
        try:
            return run_comparison(models, args.dataset, seeds, output, config_files, cmd_args=rest,
                                  extra_test_modes=extra, workers=args.workers or 1)
        except (ThreadsError, WorkerFailed) as err:
            raise SystemExit(f"error: {err}") from None
    model = args.model or "SASRecGenAIR"
    if args.ablation:
        variants = dict(item.split("=", 1) for item in args.ablation.split(",") if item)
        output = args.output or f"results/ablation-{args.dataset}"
        tables = ablation_report(variants, model, parse_seeds(seeds), output, extra)
        print("\n\n".join(tables.values()))
        return tables
    if args.tune:
        output = args.output or f"results/tune-{model}-{args.dataset}"
        return run_tuning(model, args.dataset, args.params_file or str(PROPS_DIR / "tuning" / "genair.hyper"), output,
                          config_files, cmd_args=rest, algo=args.algo or "exhaustive", max_evals=args.max_evals or 100)
    settings = distributed_settings(rest)
    if settings is not None:
        return run_distributed(model, args.dataset, config_files, rest, settings)
    result = run_recbole_genair(model, args.dataset, config_file_list=config_files, cmd_args=rest)
    line = reference_line(result["model"], result["backbone"], result["settings"], result["test_result"],
                          load_reference(args.dataset), seed=result["seed"])
    if line:
        print(line, flush=True)
    return result


if __name__ == "__main__":
    main()
