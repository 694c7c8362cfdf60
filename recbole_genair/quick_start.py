"""One run function for every model, ours and RecBole's (no `recbole.quick_start`, no ray)."""
import argparse
import copy
import logging
import sys
from logging import getLogger

import torch
from recbole.data import data_preparation
from recbole.utils import get_environment, init_logger, init_seed, set_color

from recbole_genair.config import PROPS_DIR, Config
from recbole_genair.data import create_dataset
from recbole_genair.runtime import apply_speed_fixes, trusted_checkpoint_load, use_fast_dropout
from recbole_genair.utils import get_model, get_trainer


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

    dataset = create_dataset(config)
    logger.info(dataset)
    train_data, valid_data, test_data = data_preparation(config, dataset)

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
    """Rebuild config, data and model from a checkpoint written by our run function."""
    apply_speed_fixes()
    with trusted_checkpoint_load():
        checkpoint = torch.load(model_file, map_location="cpu", weights_only=False)
    config = checkpoint["config"]
    config.compatibility_settings()  # numpy aliases RecBole sets when a Config is built, not when unpickled
    init_seed(config["seed"], config["reproducibility"])
    init_logger(config)
    dataset = create_dataset(config)
    train_data, valid_data, test_data = data_preparation(config, dataset)
    model = build_model(config, train_data)
    model.load_state_dict(checkpoint["state_dict"])
    model.load_other_parameter(checkpoint.get("other_parameter"))
    return config, model, dataset, train_data, valid_data, test_data


def parse_args(argv):
    parser = argparse.ArgumentParser(
        description="Train and evaluate a recbole_genair or RecBole model. Any other --key=value pair is a "
        "RecBole config setting (e.g. --epochs=5 --train_batch_size=512).",
    )
    parser.add_argument("--model", "-m", default="SASRecGenAIR", help="model name, ours or RecBole's")
    parser.add_argument("--dataset", "-d", default="ml-100k", help="dataset name")
    parser.add_argument("--config_files", default=None, help="YAML files, separated by spaces")
    parser.add_argument("--compare", action="store_true", help="compare --models over --seeds (see README)")
    parser.add_argument("--models", default="SASRec,SASRecGenAIR", help="comma-separated; the first is the reference")
    parser.add_argument("--seeds", default="3",
                        help="a count up to 100 (seeds 2020, 2021, ...) or a comma-separated list (one seed: 2022,)")
    parser.add_argument("--output", default=None, help="output folder of --compare / --tune (default results/...)")
    parser.add_argument("--extra_test_modes", default="",
                        help="--compare: also test the trained models under these protocols, e.g. uni100")
    parser.add_argument("--report_only", action="store_true",
                        help="--compare: write the report from the finished runs in --output, train nothing")
    parser.add_argument("--ablation", default="",
                        help="label=folder,... of --compare outputs: one table of --model's runs across them")
    parser.add_argument("--tune", action="store_true", help="search hyper-parameters with RecBole's HyperTuning")
    parser.add_argument("--params_file", default=str(PROPS_DIR / "tuning" / "genair.hyper"),
                        help="search space (RecBole format); default: the paper's grid shipped in props/tuning/")
    parser.add_argument("--algo", default="exhaustive", help="exhaustive | random | bayes")
    parser.add_argument("--max_evals", type=int, default=100, help="trials at most")
    args, rest = parser.parse_known_args(argv)
    return args, rest


def main(argv=None):
    args, rest = parse_args(sys.argv[1:] if argv is None else argv)
    config_files = args.config_files.strip().split(" ") if args.config_files else None
    if args.compare:
        from recbole_genair.evaluation.compare import run_comparison

        output = args.output or f"results/compare-{args.dataset}"
        models = [m for m in args.models.split(",") if m]
        extra = [m for m in args.extra_test_modes.split(",") if m]
        if args.report_only:
            from recbole_genair.evaluation.compare import parse_seeds, write_report

            return write_report(output, models, parse_seeds(args.seeds), extra)
        return run_comparison(models, args.dataset, args.seeds, output, config_files, cmd_args=rest,
                              extra_test_modes=extra)
    if args.ablation:
        from recbole_genair.evaluation.compare import ablation_report, parse_seeds

        variants = dict(item.split("=", 1) for item in args.ablation.split(",") if item)
        output = args.output or f"results/ablation-{args.dataset}"
        tables = ablation_report(variants, args.model, parse_seeds(args.seeds), output,
                                 [m for m in args.extra_test_modes.split(",") if m])
        print("\n\n".join(tables.values()))
        return tables
    if args.tune:
        from recbole_genair.tuning import run_tuning

        output = args.output or f"results/tune-{args.model}-{args.dataset}"
        return run_tuning(args.model, args.dataset, args.params_file, output, config_files, cmd_args=rest,
                          algo=args.algo, max_evals=args.max_evals)
    return run_recbole_genair(args.model, args.dataset, config_file_list=config_files, cmd_args=rest)


if __name__ == "__main__":
    main()
