import subprocess
import sys

import pytest
import torch

from conftest import assert_one_epoch_trains_and_reports_its_ndcg, tiny_config
from recbole_genair.quick_start import load_data_and_model, run_recbole_genair
from recbole_genair.trainer import LLMRecTrainer
from recbole_genair.utils import get_trainer


@pytest.mark.parametrize("model", ["SASRec", "SASRecGenAIR", "GRU4RecGenAIR", "BERT4RecGenAIR"])
def test_model_trains_one_epoch_and_reports_the_ndcg_of_its_scores(tmp_path, model):
    """One epoch moves the item table; the reported test NDCG@10 is the one the model's scores give.

    Fails if the item table does not train (GenAIR's projector frozen) or the test users are scored in training mode.
    """
    assert_one_epoch_trains_and_reports_its_ndcg(tmp_path, model)


def test_genair_logs_calibration_as_its_own_loss(tmp_path, caplog):
    caplog.set_level("INFO")
    run_recbole_genair(model="SASRecGenAIR", config_dict=tiny_config(tmp_path, state="INFO"), saved=False)
    lines = [r.getMessage() for r in caplog.records if "epoch 0 training" in r.getMessage()]
    assert len(lines) == 1 and "cal_loss" in lines[0] and "rec_loss" in lines[0]


def test_recbole_models_use_our_trainer():
    assert get_trainer(None, "SASRec") is LLMRecTrainer
    assert get_trainer(None, "SASRecGenAIR") is LLMRecTrainer


def test_checkpoint_save_reload_and_evaluate(tmp_path):
    result = run_recbole_genair(model="SASRecGenAIR", config_dict=tiny_config(tmp_path, epochs=2), saved=True)
    config, model, dataset, train_data, valid_data, test_data = load_data_and_model(result["saved_model_file"])
    assert type(model).__name__ == "SASRecGenAIR"
    trainer = LLMRecTrainer(config, model)
    reloaded = trainer.evaluate(test_data, load_best_model=False)
    assert reloaded["ndcg@10"] == pytest.approx(result["test_result"]["ndcg@10"], abs=1e-4)
    # the reloaded trainer can also read the checkpoint itself (torch >= 2.6 weights_only default)
    again = trainer.evaluate(test_data, load_best_model=True, model_file=result["saved_model_file"])
    assert again["ndcg@10"] == pytest.approx(reloaded["ndcg@10"], abs=1e-6)
    # a fresh process, where no Config has been built (RecBole sets numpy's old aliases in Config)
    script = ("import sys; from recbole_genair.quick_start import load_data_and_model; "
              "print(type(load_data_and_model(sys.argv[1])[1]).__name__)")
    fresh = subprocess.run([sys.executable, "-c", script, result["saved_model_file"]], capture_output=True, text=True)
    assert fresh.returncode == 0, fresh.stderr[-2000:]
    assert fresh.stdout.strip().splitlines()[-1] == "SASRecGenAIR"


def test_speed_fixes_leave_no_anomaly_detection(tmp_path):
    run_recbole_genair(model="SASRec", config_dict=tiny_config(tmp_path), saved=False)
    assert not torch.is_anomaly_enabled()
