"""Our trained models in RecBole's own tools: RecBole's `Config` from a checkpoint's settings, and a checkpoint of
the backbone that RecBole's `recbole.quick_start.load_data_and_model` reads (`Recommender.export_recbole`)."""
import torch

from recbole_genair.checkpoint import CheckpointError, SavedConfig, atomic_save
from recbole_genair.config import Config
from recbole_genair.utils import get_model


def recbole_config(saved, model_class=None):
    """RecBole's `Config` (ours, a subclass) holding a `SavedConfig`'s settings, without reading YAML or argv again;
    `model_class`: the model it names (default: the class of its `model` setting)."""
    settings = saved.final_config_dict
    model_class = get_model(settings["model"]) if model_class is None else model_class
    config = Config.__new__(Config)
    config.__dict__.update(final_config_dict=settings, model=settings["model"], dataset=settings["dataset"],
                           model_class=model_class, parameters={"Settings": list(settings)})
    return config


# Methods whose trained model is its backbone with another item table: materialised, the backbone is the model.
_TABLE_ONLY_METHODS = ("GenAIR", "TFLLMER", "LLMInit")


def recbole_backbone(model):
    """The RecBole class `model` is, once its item table is materialised; `CheckpointError` saying why not."""
    backbone = next((cls for cls in type(model).__mro__ if cls.__module__.startswith("recbole.model.")), None)
    method = next((cls.__name__ for cls in type(model).__mro__ if cls.__name__ in _TABLE_ONLY_METHODS), None)
    if backbone is type(model):
        return backbone
    if backbone is None or method is None:
        raise CheckpointError(f"{type(model).__name__} is more than a RecBole model with another item table (it has "
                              f"parts of its own at scoring time): RecBole cannot rebuild it; use recbole_genair's "
                              f"loader (Recommender.load). Exportable: GenAIR, TF-LLMER, LLMInit and RecBole's models")
    return backbone


def write_recbole_checkpoint(config, model, path):
    """`model` as a checkpoint of its RecBole backbone that RecBole's own `load_data_and_model` reads.

    GenAIR's and TF-LLMER's item rows (projector over the frozen LLM table, residual, normalisation) are
    computed once and written as the backbone's `item_embedding.weight`; everything else is the backbone's
    own weights, so RecBole's model scores exactly as ours. Like every RecBole checkpoint it pickles the
    config (ours, a subclass of RecBole's that restores numpy's aliases when read); RecBole 1.2.1 on
    torch >= 2.6 reads it, as its own checkpoints, with TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1.
    """
    backbone = recbole_backbone(model)
    if getattr(model, "added_item_ids", ()):
        raise CheckpointError(f"the model holds {len(model.added_item_ids)} items added after training, which the "
                              f"dataset RecBole rebuilds does not have: export the checkpoint saved before adding them")
    with torch.no_grad():
        table = model.item_embedding.weight.detach().clone()
    state = {key: value for key, value in model.state_dict().items() if not key.startswith("item_embedding.")}
    state["item_embedding.weight"] = table
    settings = SavedConfig(dict(config.final_config_dict, model=backbone.__name__))
    return atomic_save({"config": recbole_config(settings, backbone), "epoch": 0, "cur_step": 0,
                        "best_valid_score": None, "state_dict": state, "other_parameter": None,
                        "exported_from": type(model).__name__}, path)
