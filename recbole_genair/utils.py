"""Model and trainer lookup: our models first, then RecBole's (as RecBole-GNN does)."""
import functools
import importlib
import inspect
from pathlib import Path

import recbole
from recbole.model.abstract_recommender import AbstractRecommender
from recbole.utils import get_model as recbole_get_model

from recbole_genair.config_keys import closest_keys
from recbole_genair.runtime import disable_anomaly_detection

_RECBOLE_MODEL_PACKAGES = ("general_recommender", "context_aware_recommender", "sequential_recommender",
                           "knowledge_aware_recommender")
# Needs lightgbm / xgboost: listed by file name so that a typo never imports them.
_RECBOLE_EXLIB = "exlib_recommender"


class UnknownModelError(ValueError):
    """A model name that neither recbole_genair nor RecBole defines."""


@functools.lru_cache(maxsize=1)
def model_names():
    """Names of every model: recbole_genair's, then RecBole's (its lightgbm/xgboost ones by module)."""
    ours = importlib.import_module("recbole_genair.model")
    variants = importlib.import_module("recbole_genair.model.variants")
    names = list(ours.__all__) + [n for n in variants.variant_names() if n not in ours.__all__]
    for package in _RECBOLE_MODEL_PACKAGES:
        module = importlib.import_module(f"recbole.model.{package}")
        names += [n for n, obj in vars(module).items()
                  if inspect.isclass(obj) and issubclass(obj, AbstractRecommender) and n not in names]
    disable_anomaly_detection()
    return names


def _exlib_module_names():
    folder = Path(recbole.__file__).resolve().parent / "model" / _RECBOLE_EXLIB
    return {p.stem for p in folder.glob("*.py") if p.stem != "__init__"}


def check_model_name(model_name):
    """Refuse a name no model has, before anything is built, with the names it resembles."""
    names = model_names()
    if model_name in names or str(model_name).lower() in _exlib_module_names():
        return
    close = closest_keys(str(model_name), names, n=4)
    hint = f"did you mean {', '.join(close)}?" if close else (
        f"recbole_genair's models: {', '.join(importlib.import_module('recbole_genair.model').__all__)}")
    raise UnknownModelError(f"no model is called {model_name!r} (names are case-sensitive); {hint}")


def get_model(model_name):
    """Return the model class named `model_name`, from recbole_genair or else from RecBole.

    `<Backbone><Method>` names (e.g. NARMGenAIR) are built by `recbole_genair.model.variants`, which
    refuses a backbone it cannot serve with the reason.
    """
    ours = importlib.import_module("recbole_genair.model")
    model_class = getattr(ours, model_name, None)
    if model_class is None:
        model_class = importlib.import_module("recbole_genair.model.variants").variant_class(model_name)
    if model_class is None:
        check_model_name(model_name)
        model_class = recbole_get_model(model_name)
    # RecBole's get_model imports every sequential model; sine.py turns anomaly detection on.
    disable_anomaly_detection()
    return model_class


def get_trainer(model_type, model_name):
    """Our trainer for our models and for every model RecBole trains with its plain `Trainer`.

    Other RecBole trainers get the checkpoint-loading fix mixed in and nothing else.
    """
    from recbole.trainer import Trainer
    from recbole.utils import get_trainer as recbole_get_trainer

    from recbole_genair.trainer import CheckpointLoadMixin, LLMRecTrainer

    ours = importlib.import_module("recbole_genair.model")
    if hasattr(ours, model_name):
        return LLMRecTrainer
    recbole_trainer = recbole_get_trainer(model_type, model_name)
    if recbole_trainer is Trainer:
        return LLMRecTrainer
    return type(recbole_trainer.__name__, (CheckpointLoadMixin, recbole_trainer), {})
