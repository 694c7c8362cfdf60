"""One run function for every model, ours and RecBole's (no `recbole.quick_start`, no ray)."""
import argparse
import copy
import logging
import os
import sys
from logging import getLogger

import torch
from recbole.data import data_preparation
from recbole.utils import get_environment, init_logger, init_seed, set_color

from recbole_genair.config import PROPS_DIR, Config
from recbole_genair.data import create_dataset
from recbole_genair.data.itememb import itememb_path
from recbole_genair.data.train_modes import all_position_loader
from recbole_genair.model.all_positions import train_objective
from recbole_genair.runtime import apply_speed_fixes, trusted_checkpoint_load, use_fast_dropout
from recbole_genair.utils import get_model, get_trainer


def prepare_data(config, dataset):
    """RecBole's training, validation and test loaders of `dataset`.

    With `train_mode: all_positions` the training loader gives each training sequence once per epoch
    (`recbole_genair.data.train_modes`); the split and the validation and test loaders are RecBole's.
    """
    objective = train_objective(config.model_class, config["train_mode"])
    train_data, valid_data, test_data = data_preparation(config, dataset)
    if objective is not None:
        train_data = all_position_loader(config, train_data, objective)
    return train_data, valid_data, test_data


def build_model(config, train_data):
    """Instantiate `config['model']` on the training split, with the CPU speed fixes applied."""
    apply_speed_fixes()
    init_seed(config["seed"] + config["local_rank"], config["reproducibility"])
    model = get_model(config["model"])(config, train_data._dataset).to(config["device"])
    if config["fast_dropout"]:
        use_fast_dropout(model)
    return model


def test_loader_for_mode(config, mode):
    """The test split of `config`'s dataset under another evaluation protocol (`full`, `uni100`, ...).

    The dataset is loaded again (RecBole builds a dataset only once) and split the same way (the split
    is deterministic); only the negatives of the test users change.
    """
    other = copy.deepcopy(config)
    other["eval_args"]["mode"] = {**other["eval_args"]["mode"], "test": mode}
    other._set_eval_neg_sample_args("test")
    return data_preparation(other, create_dataset(other))[2]


def run_recbole_genair(
    model=None, dataset=None, config_file_list=None, config_dict=None, cmd_args=None, saved=True, verbose=True,
    inspect=None, extra_test_modes=(),
):
    """Train `model` on `dataset` and evaluate it on the validation and test splits.

    Works for recbole_genair's models and for RecBole's own, so every comparison uses one code path.
    Returns RecBole's result dict (best_valid_score, valid_score_bigger, best_valid_result, test_result)
    plus the evaluation mode; `inspect(config, model, train_data, test_data)`, if given, runs on the
    evaluated model and its return value is kept under "analysis". `extra_test_modes` (e.g. `["uni100"]`)
    evaluates the same trained model on the test split under other protocols too ("extra_test_results");
    the negatives are drawn from the run's seed, so every model compared ranks against the same ones.
    """
    apply_speed_fixes()
    config = Config(model, dataset, config_file_list, config_dict, cmd_args=cmd_args)
    init_seed(config["seed"], config["reproducibility"])
    init_logger(config)
    logger = getLogger()
    if not verbose:
        logger.setLevel(logging.WARNING)
    logger.info(sys.argv)
    logger.info(config)

    train_objective(config.model_class, config["train_mode"])  # refuse an unsupported mode before loading data
    dataset = create_dataset(config)
    logger.info(dataset)
    train_data, valid_data, test_data = prepare_data(config, dataset)

    model = build_model(config, train_data)
    logger.info(model)
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)

    best_valid_score, best_valid_result = trainer.fit(
        train_data, valid_data, saved=saved, show_progress=config["show_progress"]
    )
    test_result = trainer.evaluate(test_data, load_best_model=saved, show_progress=config["show_progress"])
    extra_test_results = {}
    for mode in extra_test_modes or ():
        loader = test_loader_for_mode(config, mode)
        init_seed(config["seed"], config["reproducibility"])
        extra_test_results[mode] = trainer.evaluate(loader, load_best_model=False, show_progress=config["show_progress"])
        logger.info(set_color(f"test result ({mode})", "yellow") + f": {extra_test_results[mode]}")

    environment_tb = get_environment(config)
    logger.info("The running environment of this training is as follows:\n" + environment_tb.draw())
    logger.info(set_color("best valid ", "yellow") + f": {best_valid_result}")
    logger.info(set_color("test result", "yellow") + f": {test_result}")
    return {
        "model": config["model"],
        "best_valid_score": best_valid_score,
        "valid_score_bigger": config["valid_metric_bigger"],
        "best_valid_result": best_valid_result,
        "test_result": test_result,
        "saved_model_file": trainer.saved_model_file if saved else None,
        "eval_mode": config["eval_args"]["mode"]["test"],
        "extra_test_results": extra_test_results,
        "analysis": inspect(config, model, train_data, test_data) if inspect else None,
    }


def objective_function(config_dict=None, config_file_list=None, saved=True):
    """RecBole's `HyperTuning` objective, through our run function (RecBole's imports ray)."""
    result = run_recbole_genair(config_dict=config_dict, config_file_list=config_file_list, saved=saved, verbose=False)
    return result


def load_data_and_model(model_file):
    """Rebuild config, data and model from a checkpoint written by our run function.

    LLM-enhanced models read their `.itememb` file if it is there, else the item vectors stored in the
    checkpoint (the dataset's interaction files are still needed).
    """
    apply_speed_fixes()
    with trusted_checkpoint_load():
        checkpoint = torch.load(model_file, map_location="cpu", weights_only=False)
    config = checkpoint["config"]
    config.compatibility_settings()  # numpy aliases RecBole sets when a Config is built, not when unpickled
    init_seed(config["seed"], config["reproducibility"])
    init_logger(config)
    stored = (checkpoint.get("other_parameter") or {}).get("llm_item_vectors")
    if stored is not None and os.path.isfile(itememb_path(config)):
        stored = None
    elif stored is not None:
        getLogger().warning(f"{itememb_path(config)} is missing: using the item vectors stored in {model_file}")
    dataset = create_dataset(config, llm_item_vectors=stored)
    train_data, valid_data, test_data = prepare_data(config, dataset)
    model = build_model(config, train_data)
    model.load_state_dict(checkpoint["state_dict"])
    model.load_other_parameter(checkpoint.get("other_parameter"))
    return config, model, dataset, train_data, valid_data, test_data


# Flags of one mode only; given in another mode they would be ignored, so they are refused.
MODE_FLAGS = {
    "compare": ("models", "seeds", "extra_test_modes", "report_only", "output"),
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
    given = [f for f in ("models", "seeds", "extra_test_modes", "output", "params_file", "algo", "max_evals", "model")
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
    seed = next((a for a in rest if a.startswith("--seed=")), None)
    if seed and mode == "compare":
        raise SystemExit(f"error: {seed} would be replaced by each seed of --seeds in --{mode}; "
                         f"give --seeds={seed.split('=', 1)[1]}, for this one seed")


def main(argv=None):
    args, rest = parse_args(sys.argv[1:] if argv is None else argv)
    config_files = args.config_files.strip().split(" ") if args.config_files else None
    seeds = args.seeds or "3"
    extra = [m for m in (args.extra_test_modes or "").split(",") if m]
    if args.compare:
        from recbole_genair.evaluation.compare import run_comparison

        output = args.output or f"results/compare-{args.dataset}"
        models = [m for m in (args.models or "SASRec,SASRecGenAIR").split(",") if m]
        if args.report_only:
            from recbole_genair.evaluation.compare import parse_seeds, write_report

            return write_report(output, models, parse_seeds(seeds), extra)
        return run_comparison(models, args.dataset, seeds, output, config_files, cmd_args=rest,
                              extra_test_modes=extra)
    model = args.model or "SASRecGenAIR"
    if args.ablation:
        from recbole_genair.evaluation.compare import ablation_report, parse_seeds

        variants = dict(item.split("=", 1) for item in args.ablation.split(",") if item)
        output = args.output or f"results/ablation-{args.dataset}"
        tables = ablation_report(variants, model, parse_seeds(seeds), output, extra)
        print("\n\n".join(tables.values()))
        return tables
    if args.tune:
        from recbole_genair.tuning import run_tuning

        output = args.output or f"results/tune-{model}-{args.dataset}"
        return run_tuning(model, args.dataset, args.params_file or str(PROPS_DIR / "tuning" / "genair.hyper"), output,
                          config_files, cmd_args=rest, algo=args.algo or "exhaustive", max_evals=args.max_evals or 100)
    return run_recbole_genair(model, args.dataset, config_file_list=config_files, cmd_args=rest)


if __name__ == "__main__":
    main()
