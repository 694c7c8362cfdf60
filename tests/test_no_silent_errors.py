"""Everyday mistakes that used to give wrong numbers without an error (issue 14), each reproduced."""
import json
import logging
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from conftest import TEST_DATA, copy_dataset, tiny_config
from recbole_genair.commands.compare import run_comparison
from recbole_genair.commands.train import main, parse_args
from recbole_genair.config import Config, ConfigFileError
from recbole_genair.config_keys import ConfigKeyError
from recbole_genair.data import create_dataset
from recbole_genair.data.files import DatasetFilesError
from recbole_genair.data.itememb import ItemEmbeddingError
from recbole_genair.paths import DATASET_DIR
from recbole_genair.quick_start import load_data_and_model, run_recbole_genair
from recbole_genair.trainer import LLMRecTrainer
from recbole_genair.utils import UnknownModelError, get_model


def own_copy(tmp_path, name):
    """A writable copy of the tiny dataset and a config dict that reads it."""
    folder = copy_dataset(tmp_path, name)
    return folder, tiny_config(tmp_path, data_path=str(tmp_path / "data"), dataset=name)


# 1. checkpoints ---------------------------------------------------------------------------------------

def test_trainers_started_in_the_same_second_write_different_checkpoints(tmp_path):
    config = Config("SASRec", config_dict=tiny_config(tmp_path))
    model = get_model("SASRec")(config, create_dataset(config))
    first, second = LLMRecTrainer(config, model), LLMRecTrainer(config, model)
    assert first.saved_model_file != second.saved_model_file
    assert first.saved_model_file.startswith(str(tmp_path / "saved" / "SASRec-seed2020-"))


TRAIN_AND_PRINT = textwrap.dedent("""
    import json, sys
    sys.path.insert(0, sys.argv[1])
    from conftest import tiny_config
    from pathlib import Path
    from recbole_genair.quick_start import run_recbole_genair
    config = tiny_config(Path(sys.argv[2]), seed=int(sys.argv[3]), epochs=2)
    result = run_recbole_genair("SASRecGenAIR", config_dict=config, saved=True)
    print(json.dumps({"file": result["saved_model_file"], "ndcg": result["test_result"]["ndcg@10"]}))
""")


def test_two_processes_sharing_a_checkpoint_dir_each_test_their_own_weights(tmp_path):
    tests_dir = str(TEST_DATA.parent)
    procs = [subprocess.Popen([sys.executable, "-c", TRAIN_AND_PRINT, tests_dir, str(tmp_path), str(seed)],
                              cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for seed in (2020, 2021)]
    outputs = [p.communicate(timeout=600) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err[-2000:] for _, err in outputs]
    runs = [json.loads(out.strip().splitlines()[-1]) for out, _ in outputs]
    assert runs[0]["file"] != runs[1]["file"]
    for seed, run in zip((2020, 2021), runs):
        config, model, _, train_data, _, test_data = load_data_and_model(run["file"])
        assert config["seed"] == seed
        trainer = LLMRecTrainer(config, model)
        assert trainer.evaluate(test_data, load_best_model=False)["ndcg@10"] == pytest.approx(run["ndcg"], abs=1e-6)


HOLD_RUN_LOCK = textwrap.dedent("""
    import sys, time
    from recbole_genair.locking import ProcessLock
    ProcessLock(sys.argv[1]).acquire()
    print("locked", flush=True)
    time.sleep(600)
""")


def test_comparison_skips_a_run_that_another_process_is_training(tmp_path):
    output = tmp_path / "cmp"
    (output / "runs").mkdir(parents=True)
    holder = subprocess.Popen([sys.executable, "-c", HOLD_RUN_LOCK, str(output / "runs" / "SASRec-seed2020.lock")],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        config = tiny_config(tmp_path)
        config.pop("seed")
        run_comparison(["SASRec"], "genair-test", "2020,2021", output, config_dict=config)
    finally:
        holder.kill()
        holder.wait()
    assert sorted(p.name for p in (output / "runs").glob("*.json")) == ["SASRec-seed2021.json"]
    record = json.loads((output / "runs" / "SASRec-seed2021.json").read_text())
    assert record["checkpoint"].startswith(str(output / "checkpoints" / "SASRec-seed2021-"))


# 3. flags and keys ------------------------------------------------------------------------------------

def test_seed_is_not_an_abbreviation_of_seeds():
    args, rest = parse_args(["--model=SASRec", "--seed=42"])
    assert args.seeds is None and rest == ["--seed=42"]
    assert Config("SASRec", "ml-100k", cmd_args=rest)["seed"] == 42


def test_seed_in_a_comparison_points_to_seeds():
    with pytest.raises(SystemExit, match=r"--seeds=42,"):
        parse_args(["--compare", "--models=SASRec", "--seed=42"])


def test_flags_of_another_mode_are_refused():
    with pytest.raises(SystemExit, match=r"--models would be ignored.*--compare"):
        parse_args(["--models=SASRec,SASRecGenAIR"])
    with pytest.raises(SystemExit, match=r"--model would be ignored"):
        parse_args(["--compare", "--model=SASRec"])


@pytest.mark.parametrize("typo, known", [("alpah", "alpha"), ("projector_hiden_size", "projector_hidden_size"),
                                         ("learning_rte", "learning_rate")])
def test_misspelled_keys_are_refused_with_the_closest_key(tmp_path, typo, known):
    with pytest.raises(ConfigKeyError, match=rf"'{typo}' \(command line\): did you mean {known}\b"):
        Config("SASRecGenAIR", config_dict=tiny_config(tmp_path), cmd_args=[f"--{typo}=0.1"])


def test_misspelled_keys_in_a_yaml_file_name_the_file(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("epochs: 2\nstoping_step: 2\n")
    with pytest.raises(ConfigKeyError, match=rf"'stoping_step' \(in {path}\): did you mean stopping_step"):
        Config("SASRec", config_file_list=[str(path)], config_dict=tiny_config(tmp_path))


def test_invalid_yaml_file_is_named_with_its_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("epochs: 2\nmetrics: [NDCG, Hit\ntopk: [10]\n")
    with pytest.raises(ConfigFileError, match=rf"{path} is not valid YAML \(line \d+, column \d+\)"):
        Config("SASRec", config_file_list=[str(path)], config_dict=tiny_config(tmp_path))


# 5. look-alike items (training side) -------------------------------------------------------------------

def test_items_sharing_a_vector_are_named(tmp_path, caplog):
    folder, config = own_copy(tmp_path, "twins")
    path = folder / "twins.itememb"
    lines = path.read_text().splitlines()
    lines[5] = lines[5].split("\t")[0] + "\t" + lines[2].split("\t")[1]
    path.write_text("\n".join(lines) + "\n")
    caplog.set_level(logging.WARNING)
    config_obj = Config("SASRecGenAIR", config_dict=config)
    dataset = create_dataset(config_obj)
    from recbole_genair.data.itememb import load_llm_item_table

    load_llm_item_table(dataset, config_obj)
    message = " ".join(r.getMessage() for r in caplog.records)
    a, b = lines[2].split("\t")[0], lines[5].split("\t")[0]
    assert "2 items share their vector" in message
    assert f"'{a}' = '{b}'" in message or f"'{b}' = '{a}'" in message


# 6. model names ---------------------------------------------------------------------------------------

def test_mistyped_model_name_lists_close_matches():
    with pytest.raises(UnknownModelError, match=r"'SASRecGenAir'.*did you mean SASRecGenAIR"):
        get_model("SASRecGenAir")


def test_comparison_refuses_a_mistyped_model_before_training_anything(tmp_path):
    output = tmp_path / "cmp"
    with pytest.raises(UnknownModelError, match=r"did you mean GRU4RecGenAIR"):
        run_comparison(["SASRec", "GRU4RecGenAir"], "genair-test", "2020,", output, config_dict=tiny_config(tmp_path))
    assert not list((output / "runs").glob("*.json"))


# 7. one valid_metric ----------------------------------------------------------------------------------

def test_every_dataset_early_stops_on_ndcg_at_10(tmp_path):
    config = tiny_config(tmp_path)
    config.pop("valid_metric")
    assert Config("SASRec", config_dict=config)["valid_metric"] == "NDCG@10"  # no props/dataset/genair-test.yaml


def test_a_valid_metric_that_is_not_computed_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"valid_metric=MRR@10 is not computed: metrics=\['Recall', 'NDCG'\]"):
        Config("SASRec", config_dict=tiny_config(tmp_path, valid_metric="MRR@10"))


# 8. view widths describe one file ---------------------------------------------------------------------

def rewrite_vectors(path, change):
    header, *rows = path.read_text().splitlines()
    path.write_text("\n".join([header, *[change(r) for r in rows]]) + "\n")


def test_view_widths_of_another_itememb_are_refused(tmp_path):
    folder, config = own_copy(tmp_path, "stale")
    # another file of the same width (e.g. vectors regenerated with other PCA widths), the old json kept
    rewrite_vectors(folder / "stale.itememb", lambda r: r.split("\t")[0] + "\t" + " ".join(r.split("\t")[1].split()[::-1]))
    with pytest.raises(ItemEmbeddingError, match=r"stale\.itememb\.json describes another version of .*stale\.itememb"):
        run_recbole_genair("SASRecGenAIR", config_dict={**config, "llm_views": "prefill"}, saved=False)


def test_view_widths_without_a_checksum_are_refused(tmp_path):
    folder, config = own_copy(tmp_path, "nosum")
    meta = json.loads((folder / "nosum.itememb.json").read_text())
    del meta["itememb_sha256"]
    (folder / "nosum.itememb.json").write_text(json.dumps(meta))
    with pytest.raises(ItemEmbeddingError, match=r"has no checksum of the file it describes.*llm_view_widths"):
        run_recbole_genair("SASRecGenAIR", config_dict={**config, "llm_views": "decoding"}, saved=False)
    result = run_recbole_genair("SASRecGenAIR", config_dict={**config, "llm_views": "decoding",
                                                             "llm_view_widths": [12, 12]}, saved=False)
    assert result["test_result"]["ndcg@10"] >= 0


# 9. smaller ones --------------------------------------------------------------------------------------

def test_trailing_spaces_in_vector_rows_are_read_as_recbole_reads_them(tmp_path):
    folder, config = own_copy(tmp_path, "spaces")
    clean = Config("SASRecGenAIR", config_dict=tiny_config(tmp_path))
    expected = get_model("SASRecGenAIR")(clean, create_dataset(clean)).item_embedding.llm_table
    rewrite_vectors(folder / "spaces.itememb", lambda r: r + " ")
    spaced = Config("SASRecGenAIR", config_dict=config)
    table = get_model("SASRecGenAIR")(spaced, create_dataset(spaced)).item_embedding.llm_table
    assert torch.equal(table, expected)


def test_data_path_may_name_the_dataset_folder_itself(tmp_path):
    folder, config = own_copy(tmp_path, "direct")
    config["data_path"] = str(folder)  # RecBole's convention is the parent folder
    assert Config("SASRecGenAIR", config_dict=config)["data_path"] == str(folder)
    assert run_recbole_genair("SASRecGenAIR", config_dict=config, saved=False)["test_result"]["ndcg@10"] >= 0


def test_a_given_data_path_is_used_for_ml100k_too(tmp_path):
    # RecBole 1.2.1 replaces any data_path by its bundled ml-100k example; ours must read the folder given.
    folder = tmp_path / "data" / "ml-100k"
    folder.mkdir(parents=True)
    for suffix in ("inter", "itememb", "itememb.json"):
        (folder / f"ml-100k.{suffix}").write_bytes((DATASET_DIR / "ml-100k" / f"ml-100k.{suffix}").read_bytes())
    config = Config("SASRec", "ml-100k", config_dict={"data_path": str(tmp_path / "data")})
    assert config["data_path"] == str(folder)
    assert Config("SASRec", "ml-100k", config_dict={"data_path": str(folder)})["data_path"] == str(folder)


def test_a_wrong_data_path_is_named_before_the_vectors(tmp_path):
    config = tiny_config(tmp_path, data_path=str(tmp_path / "nowhere"))
    with pytest.raises(DatasetFilesError, match=r"the folder .*nowhere/genair-test does not exist.*--data_path"):
        run_recbole_genair("SASRecGenAIR", config_dict=config, saved=False)
    folder, config = own_copy(tmp_path, "nointer")
    (folder / "nointer.inter").rename(folder / "interactions.tsv")
    with pytest.raises(DatasetFilesError, match=r"has no nointer\.inter \(it holds interactions\.tsv, nointer\.item"):
        run_recbole_genair("SASRecGenAIR", config_dict=config, saved=False)


@pytest.mark.parametrize("model", ["SASRecGenAIR", "SASRecTFLLMER"])
def test_checkpoint_loads_without_its_itememb(tmp_path, model):
    folder, config = own_copy(tmp_path, "gone")
    result = run_recbole_genair(model, config_dict={**config, "epochs": 2}, saved=True)
    (folder / "gone.itememb").unlink()
    loaded, model_obj, _, train_data, _, test_data = load_data_and_model(result["saved_model_file"])
    trainer = LLMRecTrainer(loaded, model_obj)
    assert trainer.evaluate(test_data, load_best_model=False)["ndcg@10"] == pytest.approx(
        result["test_result"]["ndcg@10"], abs=1e-6)


def test_filtered_items_in_itememb_point_to_the_preprocessor_setting(tmp_path):
    _, config = own_copy(tmp_path, "kcore")
    with pytest.raises(ItemEmbeddingError, match=r"removed by RecBole's filtering.*item_inter_num_interval.*"
                                                 r"archetype preprocessor the same settings"):
        create_dataset(Config("SASRecGenAIR", config_dict={**config, "item_inter_num_interval": "[8,inf)"}))


def test_calibration_weight_on_a_model_without_calibration_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"alpha=0\.1: behavioural calibration is GenAIR's loss, and SASRecTFLLMER"):
        run_recbole_genair("SASRecTFLLMER", config_dict=tiny_config(tmp_path, alpha=0.1), saved=False)
