"""Issue 31: the measured best settings by default per model family, and the threads of the package's processes."""
import json
import logging
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from recbole.model.sequential_recommender import SASRec

from conftest import TEST_DATA, tiny_config
from recbole_genair.commands.compare import run_comparison
from recbole_genair.config import Config
from recbole_genair.evaluation.reference import build_reference, reference_line, write_reference, load_reference
from recbole_genair.model.all_positions import TrainModeError
from recbole_genair.paths import PROPS_DIR
from recbole_genair.quick_start import run_recbole_genair
from recbole_genair.threads import (ThreadsError, apply_threads, available_cores, default_threads, register_process,
                                    running_processes, warn_if_oversubscribed)
from test_archetype import dataset_without_vectors, read_jsonl, settings_for, tiny_llm_dir  # noqa: F401

FAMILY_KEYS = ("train_mode", "stopping_step", "item_residual", "item_residual_weight_decay", "projector_init_scale")


def defaults(tmp_path, model, files=None, cmd_args=None):
    """The values of `FAMILY_KEYS` a run of `model` gets (the tiny dataset's settings leave them alone)."""
    config = Config(model, config_file_list=files, config_dict=tiny_config(tmp_path), cmd_args=cmd_args)
    return {key: config[key] for key in FAMILY_KEYS}, config


@pytest.mark.parametrize("model, expected", [
    ("SASRec", ("all_positions", 10, None, None, None)),
    ("GRU4Rec", ("all_positions", 10, None, None, None)),
    ("SASRecGenAIR", ("all_positions", 10, True, 1e-4, "default")),
    ("GRU4RecGenAIR", ("all_positions", 10, True, 1e-4, "default")),
    ("SASRecTFLLMER", ("all_positions", 10, False, None, "default")),  # props/model/LLMItemEmbeddingMixin.yaml
    ("BERT4Rec", ("prefix", 3, None, None, None)),
    ("BERT4RecGenAIR", ("prefix", 3, False, None, "default")),
    ("NARMGenAIR", ("prefix", 3, False, None, "default")),
    ("NextItNetGenAIR", ("prefix", 3, False, None, "backbone")),
])
def test_each_family_gets_its_measured_defaults_from_props(tmp_path, model, expected):
    values, _ = defaults(tmp_path, model)
    assert values == dict(zip(FAMILY_KEYS, expected))


def test_the_command_line_and_yaml_files_override_the_family_defaults(tmp_path):
    values, config = defaults(tmp_path, "SASRecGenAIR",
                              cmd_args=["--train_mode=prefix", "--stopping_step=4", "--item_residual=False"])
    assert (values["train_mode"], values["stopping_step"], values["item_residual"]) == ("prefix", 4, False)
    assert "train_mode as given; stopping_step as given" in config.describe_training()
    yaml_file = tmp_path / "mine.yaml"
    yaml_file.write_text("stopping_step: 7\ntrain_mode: prefix\n")
    values, _ = defaults(tmp_path, "GRU4RecGenAIR", files=[str(yaml_file)])
    assert (values["train_mode"], values["stopping_step"]) == ("prefix", 7)


def test_the_paper_variant_is_one_file_away_on_every_backbone(tmp_path):
    paper = [str(PROPS_DIR / "variants" / "paper.yaml")]
    for model in ("SASRecGenAIR", "GRU4RecGenAIR", "NextItNetGenAIR"):
        values, _ = defaults(tmp_path, model, files=paper)
        assert (values["item_residual"], values["item_residual_weight_decay"], values["projector_init_scale"]) == \
            (False, None, "default"), model


def test_the_default_item_residual_reaches_the_model(tmp_path):
    from recbole_genair.data import create_dataset
    from recbole_genair.quick_start import build_model, prepare_data

    config = Config("SASRecGenAIR", config_dict=tiny_config(tmp_path))
    train_data, *_ = prepare_data(config, create_dataset(config))
    model = build_model(config, train_data)
    residual = [name for name, p in model.named_parameters() if "residual" in name]
    assert residual, "SASRecGenAIR's default builds the per-item residual rows"


class SASRecWithExtraLoss(SASRec):
    """A model on SASRec that adds to its loss without giving the term as `auxiliary_losses`: no all-position path."""

    def calculate_loss(self, interaction):
        return super().calculate_loss(interaction) * 1.0


def test_a_model_without_an_all_position_path_keeps_prefix_and_says_why(tmp_path):
    config = Config(SASRecWithExtraLoss, config_dict=tiny_config(tmp_path))
    assert config["train_mode"] == "prefix" and config["stopping_step"] == 10
    line = config.describe_training()
    assert "train_mode prefix" in line and "its family defaults to all_positions, but SASRecWithExtraLoss" in line
    asked = Config(SASRecWithExtraLoss, config_dict=tiny_config(tmp_path, train_mode="all_positions"))
    assert asked["train_mode"] == "all_positions"  # asked for by the user: the run refuses it, nothing falls back
    from recbole_genair.model.all_positions import train_objective
    with pytest.raises(TrainModeError, match="SASRecWithExtraLoss supports train_mode: prefix only"):
        train_objective(asked.model_class, asked["train_mode"])


def test_a_prefix_family_says_so_once_in_the_log(tmp_path, caplog):
    with caplog.at_level(logging.INFO):
        run_recbole_genair("NARM", config_dict=tiny_config(tmp_path, state="INFO"), saved=False)
    lines = [r.getMessage() for r in caplog.records if "training: train_mode" in r.getMessage()]
    assert len(lines) == 1
    assert "train_mode prefix, early stopping after 3 validations" in lines[0]
    assert "all_positions is the default of SASRec, GRU4Rec and the models on them only" in lines[0]


def test_threads_are_set_before_training_starts(tmp_path, caplog):
    torch.set_num_threads(2)
    with caplog.at_level(logging.INFO):
        result = run_recbole_genair("SASRec", config_dict=tiny_config(tmp_path, threads=1, state="INFO"), saved=False)
    assert torch.get_num_threads() == 1 and os.environ["OMP_NUM_THREADS"] == "1"
    assert result["threads"] == 1
    messages = [r.getMessage() for r in caplog.records]
    set_at = next(i for i, m in enumerate(messages) if "training: train_mode all_positions" in m and "; 1 thread" in m)
    first_epoch = next(i for i, m in enumerate(messages) if "epoch 0 training" in m)
    assert set_at < first_epoch


@pytest.mark.parametrize("value, message", [(0, "threads=0: give at least 1"), (-2, "threads=-2: give at least 1"),
                                            ("two", "threads='two' is not a count")])
def test_threads_below_one_or_not_a_count_are_refused_naming_the_setting(tmp_path, value, message):
    with pytest.raises(ThreadsError, match=message):
        run_recbole_genair("SASRec", config_dict=tiny_config(tmp_path, threads=value), saved=False)


def test_oversubscription_is_a_warning_with_the_expected_slowdown(caplog):
    cores = available_cores()
    with caplog.at_level(logging.WARNING, logger="recbole_genair.threads"):
        assert warn_if_oversubscribed(2, cores, "workers") == 2.0
        assert warn_if_oversubscribed(1, cores, "workers") == 1.0
    assert len(caplog.records) == 1
    assert f"2 workers x {cores} threads = {2 * cores} busy threads on {cores} cores" in caplog.text
    assert "at least 2.0x slower" in caplog.text


def test_default_threads_share_the_cores_with_the_package_processes_already_running(tmp_path):
    folder = tmp_path / "registry"
    assert default_threads(folder=folder) == available_cores()
    assert default_threads(processes=2, folder=folder) == max(1, available_cores() // 2)
    child = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from recbole_genair.threads import register_process
        register_process({str(folder)!r}); print("registered", flush=True); time.sleep(60)""")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "registered"
        assert running_processes(folder) == [child.pid]
        assert default_threads(folder=folder) == max(1, available_cores() // 2)
    finally:
        child.kill()
        child.wait()
    assert running_processes(folder) == [] and not (folder / str(child.pid)).exists()  # the stale entry is removed
    assert apply_threads(1, folder=folder) == 1 and running_processes(folder) == []  # its own entry is not counted
    assert register_process(folder).name == str(os.getpid())


@pytest.fixture(scope="module")
def two_worker_comparison(tmp_path_factory):
    """SASRec and GRU4Rec over two seeds, trained by `--workers=2` on the tiny dataset (threads left to the default)."""
    from conftest import working_in

    folder = tmp_path_factory.mktemp("workers")
    settings = tiny_config(folder)
    del settings["threads"]
    with working_in(folder):
        run_comparison(["SASRec", "GRU4Rec"], "genair-test", "2020,2021", folder / "out", config_dict=settings, workers=2)
    return folder / "out"


def test_two_workers_train_each_model_and_seed_once_with_the_cores_shared(two_worker_comparison):
    runs = sorted(p.name for p in (two_worker_comparison / "runs").glob("*.json"))
    assert runs == [f"{m}-seed{s}.json" for m in ("GRU4Rec", "SASRec") for s in (2020, 2021)]
    checkpoints = [p.name for p in (two_worker_comparison / "checkpoints").glob("*.pth")]
    for model in ("SASRec", "GRU4Rec"):
        for seed in (2020, 2021):
            assert sum(name.startswith(f"{model}-seed{seed}-") for name in checkpoints) == 1, (model, seed, checkpoints)
    records = [json.loads(p.read_text()) for p in (two_worker_comparison / "runs").glob("*.json")]
    assert {r["threads"] for r in records} == {max(1, available_cores() // 2)}
    assert not list((two_worker_comparison / "runs").glob("*.lock"))
    assert "| SASRec |" in (two_worker_comparison / "table.md").read_text()


def test_a_single_run_is_held_against_its_backbone_under_the_same_settings(two_worker_comparison, tmp_path):
    path = write_reference(two_worker_comparison, "SASRec", "genair-test", folder=tmp_path)
    reference = load_reference("genair-test", folder=tmp_path)
    entry = build_reference(two_worker_comparison, "SASRec")
    assert reference["SASRec"] == entry and entry["seeds"] == [2020, 2021] and path.read_text().startswith("# Written by")
    mean = sum(entry["test"]["ndcg@10"]) / 2
    line = reference_line("SASRecGenAIR", "SASRec", entry["settings"], {"ndcg@10": 2 * mean}, reference)
    assert f"SASRec under the defaults: test NDCG@10 {mean:.4f}" in line and "(2.00x SASRec)" in line
    other = {**entry["settings"], "train_mode": "prefix"}
    line = reference_line("SASRecGenAIR", "SASRec", other, {"ndcg@10": mean}, reference)
    assert "not comparable with this run, whose settings differ: train_mode 'prefix' (reference 'all_positions')" in line
    assert reference_line("GRU4RecGenAIR", "GRU4Rec", other, {"ndcg@10": mean}, reference) is None


def test_the_shipped_ml_100k_reference_holds_the_defaults_of_sasrec(tmp_path):
    from recbole_genair.evaluation.reference import run_settings

    entry = load_reference("ml-100k")["SASRec"]
    assert len(entry["seeds"]) >= 3
    config = Config("SASRec", "ml-100k", config_dict={"show_progress": False})
    assert run_settings(config) == entry["settings"], "props changed since the reference was measured: rerun it"


def test_one_archetype_command_runs_its_shards_and_merges_them(tmp_path, tiny_llm_dir):
    from recbole_genair.archetype import run_archetype
    from recbole_genair.archetype.shards import run_shards

    whole = dataset_without_vectors(tmp_path / "a", "shard")
    run_archetype(settings_for(whole, tiny_llm_dir))
    parts = dataset_without_vectors(tmp_path / "b", "shard")
    summary = run_shards(settings_for(parts, tiny_llm_dir, shards=2, threads=None))
    assert summary["shards"] == 2 and summary["threads_per_shard"] == max(1, available_cores() // 2)
    shards = sorted(p.name for p in (parts / "shard.archetype-work").glob("shard-*") if p.is_dir())
    assert shards == ["shard-0-of-2", "shard-1-of-2"]
    expected = {r["id"]: r["archetype"] for r in read_jsonl(whole / "shard.archetype")}
    assert {r["id"]: r["archetype"] for r in read_jsonl(parts / "shard.archetype")} == expected
    with pytest.raises(ValueError, match="shards=0: give at least 1"):
        run_shards(settings_for(parts, tiny_llm_dir, shards=0))
