"""Model and trainer lookup: our models first, then RecBole's (as RecBole-GNN does)."""
import importlib

from recbole.trainer import Trainer
from recbole.utils import get_model as recbole_get_model
from recbole.utils import get_trainer as recbole_get_trainer

from recbole_genair.runtime import disable_anomaly_detection


def get_model(model_name):
    """Return the model class named `model_name`, from recbole_genair or else from RecBole."""
    ours = importlib.import_module("recbole_genair.model")
    model_class = getattr(ours, model_name, None)
    if model_class is None:
        model_class = recbole_get_model(model_name)
    # RecBole's get_model imports every sequential model; sine.py turns anomaly detection on.
    disable_anomaly_detection()
    return model_class


def get_trainer(model_type, model_name):
    """Our trainer for our models and for every model RecBole trains with its plain `Trainer`.

    Other RecBole trainers get the checkpoint-loading fix mixed in and nothing else.
    """
    from recbole_genair.trainer import CheckpointLoadMixin, LLMRecTrainer

    ours = importlib.import_module("recbole_genair.model")
    if hasattr(ours, model_name):
        return LLMRecTrainer
    recbole_trainer = recbole_get_trainer(model_type, model_name)
    if recbole_trainer is Trainer:
        return LLMRecTrainer
    return type(recbole_trainer.__name__, (CheckpointLoadMixin, recbole_trainer), {})
