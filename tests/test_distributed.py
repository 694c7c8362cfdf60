"""Training on several processes (gloo, CPU) through RecBole's torch.distributed path."""
import functools
import os
import time

import pytest
import torch
import torch.distributed as dist

from conftest import tiny_config
from recbole_genair.commands.distributed import RankFailed, distributed_settings, run_distributed, spawn_ranks
from recbole_genair.quick_start import load_data_and_model, run_recbole_genair
from recbole_genair.trainer import LLMRecTrainer


def _save_parameters(folder, config, model, train_data, test_data):
    torch.save({k: v.detach().clone() for k, v in model.state_dict().items()},
               os.path.join(folder, f"rank{config['local_rank']}.pt"))


def _train_rank(rank, settings, folder, config):
    return run_recbole_genair("SASRecGenAIR", config_dict={**config, **settings, "local_rank": rank},
                              inspect=functools.partial(_save_parameters, folder))


def test_two_processes_train_agree_and_evaluate_as_one(tmp_path):
    """Gradients are averaged over the ranks (their parameters agree after training), calibration runs on each,
    and the distributed test metrics, group metrics included, equal one process's evaluation of the same weights."""
    config = tiny_config(tmp_path, epochs=2, alpha=0.1, train_batch_size=32,
                         metrics=["Hit", "NDCG", "HeadNDCG", "TailNDCG"])
    settings = distributed_settings(["--nproc=3"])  # 50 test users: the sampler repeats one to give 17 each
    result = spawn_ranks(_train_rank, settings, (str(tmp_path), config))
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(3)]
    for other in ranks[1:]:
        assert other.keys() == ranks[0].keys()
        for key in ranks[0]:
            assert torch.allclose(ranks[0][key], other[key], atol=1e-6), key
    checkpoint = result["saved_model_file"]
    config_, model, dataset, train_data, valid_data, test_data = load_data_and_model(checkpoint)
    for key, value in model.state_dict().items():  # the checkpoint holds the weights the ranks ended with
        assert torch.allclose(value, ranks[0][key], atol=1e-6), key
    trainer = LLMRecTrainer(config_, model)
    trainer.collect_training_statistics(train_data)
    single = trainer.evaluate(test_data, load_best_model=False)
    assert len(test_data.dataset) % 3 != 0
    for key, value in single.items():
        assert result["test_result"][key] == pytest.approx(value, abs=1e-4), key
    assert result["training"]["calibration_gradient_ratio"] is None  # measured in one process only


def _die_mid_run(rank, settings):
    dist.init_process_group("gloo", rank=rank, world_size=2, init_method=f"tcp://{settings['ip']}:{settings['port']}")
    dist.barrier()
    if rank == 1:
        os._exit(3)
    dist.all_reduce(torch.ones(1))  # rank 0 would wait here for ever
    dist.all_reduce(torch.ones(1))


def test_a_rank_that_dies_stops_the_run_naming_it(tmp_path):
    started = time.time()
    with pytest.raises(RankFailed, match="rank 1 of 2 died \\(exit code 3\\)"):
        spawn_ranks(_die_mid_run, distributed_settings(["--nproc=2"]))
    assert time.time() - started < 60


def test_settings_from_the_command_line():
    assert distributed_settings(["--epochs=3"]) is None
    settings = distributed_settings(["--nproc=2", "--port=29511"])
    assert settings == {"nproc": 2, "world_size": 2, "offset": 0, "ip": "127.0.0.1", "port": 29511}
    with pytest.raises(SystemExit, match="--ip"):
        distributed_settings(["--nproc=2", "--world_size=4"])


@pytest.mark.parametrize("flags, message", [
    (["--nproc=0"], r"--nproc=0: give at least 1 process"),
    (["--nproc=-2"], r"--nproc=-2: give at least 1 process"),
    (["--nproc=two"], r"--nproc=two: give a whole number"),
    (["--nproc=2", "--world_size=four"], r"--world_size=four: give a whole number"),
])
def test_process_counts_that_cannot_run_are_refused_by_name(flags, message):
    """Issue 34: --nproc=0 and -2 trained on one process silently; --nproc=two gave a bare int() error."""
    with pytest.raises(SystemExit, match=message):
        distributed_settings(flags)


def test_config_files_are_separated_by_any_run_of_spaces():
    from recbole_genair.commands.train import split_config_files
    assert split_config_files("a.yaml  b.yaml ") == ["a.yaml", "b.yaml"]
    assert split_config_files(None) is None and split_config_files("  ") is None
