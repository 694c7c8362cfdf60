"""Checkpoint files of recbole_genair: one format, written atomically, read with `weights_only=True`.

Format 2 holds only what `torch.load(weights_only=True)` accepts (tensors, numbers, strings, lists and
dicts), so reading a checkpoint never runs code from the file:

- RecBole's keys (`epoch`, `cur_step`, `best_valid_score`, `state_dict`, `other_parameter`, `optimizer`), with
  `config` as a plain dict (enums and the device by name);
- `item_ids`: raw item ids in row order (row 0 padding), `added_item_ids`: items added from their text;
- `training_columns`: the columns of the training split that model constructors read (user, target,
  history length, first history item; int32), and `user_num`: with them a model is rebuilt without
  the dataset's files (`SavedDataset`); every weight then comes from `state_dict`.

Format 1 (before 0.2) pickled RecBole's `Config`: reading one can run code from the file, so it is
refused unless the caller trusts the file (`trust=True`, `--trust_checkpoint`).
"""
import enum
import importlib
import os
import pickle
import zipfile
from pathlib import Path

import numpy as np
import torch

from recbole_genair import __version__

FORMAT = 2
FORMAT_KEY = "recbole_genair_checkpoint"
HINT = ("give a .pth file that recbole_genair's run function saved (`python run_recbole_genair.py` writes it under "
        "checkpoint_dir and logs its path; a comparison records it in runs/<model>-seed<seed>.json)")
# RecBole's enums in a config, restored by name (a plain checkpoint holds no class)
_ENUM_MODULE = "recbole.utils.enum_type"
_TRAINING_FIELDS = ("users", "targets", "lengths", "first_items")


class CheckpointError(ValueError):
    """A file that is not a checkpoint of ours, or one that does not fit the dataset or needs trust to read."""


def plain(value):
    """`value` with numpy and torch scalars as Python numbers, numpy arrays as tensors, enums and devices by name."""
    if isinstance(value, enum.Enum):
        return {"__enum__": type(value).__name__, "name": value.name}
    if isinstance(value, torch.device):
        return {"__device__": str(value)}
    if isinstance(value, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(value))
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(plain(item) for item in value)
    return value


def _restored(value):
    if isinstance(value, dict):
        if set(value) == {"__enum__", "name"}:
            return getattr(importlib.import_module(_ENUM_MODULE), value["__enum__"])[value["name"]]
        if set(value) == {"__device__"}:
            device = torch.device(value["__device__"])
            return device if device.type == "cpu" or torch.cuda.is_available() else torch.device("cpu")
        return {key: _restored(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_restored(item) for item in value]
    return value


class SavedConfig:
    """The settings of a checkpoint, read as RecBole's `Config` is (`config[key]`, None when unset).

    Built without importing RecBole's configurator (and scikit-learn with it);
    `recbole_genair.interop.recbole_config` gives the real `Config` where RecBole's data code needs one.
    """

    def __init__(self, settings):
        self.final_config_dict = settings

    def __getitem__(self, key):
        return self.final_config_dict.get(key)

    def __setitem__(self, key, value):
        self.final_config_dict[key] = value

    def __contains__(self, key):
        return key in self.final_config_dict


def plain_config(config):
    """The settings of a RecBole `Config` (or `SavedConfig`) as a plain dict."""
    return plain(dict(config.final_config_dict))


def training_inputs(train_dataset):
    """What model constructors read of the training split (`recbole_genair.data.cooccurrence.training_sequences`)
    and the number of users; None for a dataset without item histories (a general model's)."""
    if not hasattr(train_dataset, "item_list_length_field"):
        return None
    feat = train_dataset.inter_feat
    columns = (feat[train_dataset.uid_field], feat[train_dataset.iid_field], feat[train_dataset.item_list_length_field],
               feat[train_dataset.item_id_list_field][:, 0])
    return {"training_columns": {name: torch.as_tensor(column).to(torch.int32).clone()
                                 for name, column in zip(_TRAINING_FIELDS, columns)},
            "user_num": int(train_dataset.user_num)}


class SavedDataset:
    """The training split as a checkpoint keeps it: enough for a model's constructor, no dataset file read.

    Holds the item ids, the number of users, the training columns and the frozen LLM table the model was
    trained on; the statistics a constructor computes from them are those of training. Every parameter and
    stored buffer then comes from the checkpoint's `state_dict`.
    """

    rebuilt_from_checkpoint = True

    def __init__(self, config, checkpoint, stored_llm_item_table=None):
        self.config = config
        self.dataset_name = config["dataset"]
        self.uid_field, self.iid_field = config["USER_ID_FIELD"], config["ITEM_ID_FIELD"]
        self.item_id_list_field = self.iid_field + config["LIST_SUFFIX"]
        self.item_list_length_field = config["ITEM_LIST_LENGTH_FIELD"]
        added = len(checkpoint.get("added_item_ids") or [])
        ids = list(checkpoint["item_ids"])
        self.field2id_token = {self.iid_field: np.array(ids[: len(ids) - added], dtype=object)}
        self.item_num = len(ids) - added
        self.user_num = int(checkpoint["user_num"])
        columns = checkpoint["training_columns"]
        self.inter_feat = {
            self.uid_field: columns["users"].long(), self.iid_field: columns["targets"].long(),
            self.item_list_length_field: columns["lengths"].long(),
            self.item_id_list_field: columns["first_items"].long().unsqueeze(1),
        }
        self.stored_llm_item_table = stored_llm_item_table

    def num(self, field):
        if field == self.iid_field:
            return self.item_num
        if field == self.uid_field:
            return self.user_num
        raise CheckpointError(f"{self.config['model']} reads the field {field!r} of the dataset, which a checkpoint does "
                              f"not keep: load it with its dataset (recbole_genair.quick_start.load_data_and_model)")


def atomic_save(obj, path):
    """`torch.save(obj)` to `path` atomically (a reader sees the old file or the new one, never a part)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        torch.save(obj, tmp)  # the default protocol: weights_only reads no protocol-4 frames
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_checkpoint(state, path):
    """Write the checkpoint `state` (`checkpoint_state`) to `path` atomically, in plain types."""
    return atomic_save(plain(state), path)


def read_checkpoint(model_file, trust=False):
    """The dict our run function saved in `model_file`, read without running code from it.

    A checkpoint that pickles Python objects (format 1, or RecBole's own) is refused, naming the risk,
    unless `trust`; a file that is not a checkpoint of ours raises `CheckpointError` with the reason.
    """
    model_file = str(model_file)
    if not os.path.isfile(model_file):
        raise CheckpointError(f"no checkpoint at {model_file}: {HINT}")
    if not zipfile.is_zipfile(model_file):  # torch.save writes a zip archive; anything else is another file
        with open(model_file, "rb") as file:
            start = file.read(4)
        kind = "cut short or damaged" if start == b"PK\x03\x04" else f"it starts with {start!r}"
        raise CheckpointError(f"{model_file} is not a PyTorch checkpoint ({kind}); {HINT}")
    try:
        checkpoint = torch.load(model_file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        if not trust:
            raise CheckpointError(
                f"{model_file} stores Python objects besides tensors (a checkpoint written by recbole_genair before "
                f"0.2, or by RecBole): reading it can run any code the file contains. Load it only if you trust where "
                f"it comes from, with trust_checkpoint=True (--trust_checkpoint); saving it again "
                f"(Recommender.save) writes the safe format") from None
        checkpoint = _read_trusted(model_file)
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError) as err:  # truncated or not a torch file
        raise CheckpointError(f"{model_file} is not a PyTorch checkpoint or is cut short ({type(err).__name__}: "
                              f"{str(err).splitlines()[0] if str(err) else ''}); {HINT}") from None
    _check_keys(model_file, checkpoint)
    return checkpoint


def _read_trusted(model_file):
    from recbole_genair.runtime import trusted_checkpoint_load

    try:
        with trusted_checkpoint_load():
            return torch.load(model_file, map_location="cpu", weights_only=False)
    except Exception as err:  # pickle, zip and torch errors alike: the file is not a checkpoint
        raise CheckpointError(f"{model_file} is not a PyTorch checkpoint ({type(err).__name__}: {err}); {HINT}") from None


def _check_keys(model_file, checkpoint):
    if not isinstance(checkpoint, dict) or not {"config", "state_dict"} <= set(checkpoint):
        held = (", ".join(repr(k) for k in list(checkpoint)[:4]) + (", ..." if len(checkpoint) > 4 else "")
                if isinstance(checkpoint, dict) else f"a {type(checkpoint).__name__}")
        raise CheckpointError(f"{model_file} is not a RecBole checkpoint: it has no 'config' and 'state_dict' "
                              f"(it holds {held}); {HINT}")
    config = checkpoint["config"]
    if isinstance(config, dict):
        if checkpoint.get(FORMAT_KEY) != FORMAT:
            written = checkpoint.get("recbole_genair_version") or "an unknown version"
            raise CheckpointError(f"{model_file} is a checkpoint of format {checkpoint.get(FORMAT_KEY)!r} (written by "
                                  f"recbole_genair {written}); this version reads format {FORMAT}: load it with the "
                                  f"version that wrote it, or train again")
        missing = [key for key in ("item_ids", "other_parameter") if key not in checkpoint]
        if missing:
            raise CheckpointError(f"{model_file} lacks {', '.join(missing)}: the file is incomplete; {HINT}")
        checkpoint["config"] = SavedConfig(_restored(config))
        return
    if (type(config).__module__, type(config).__name__) != ("recbole_genair.config", "Config"):  # format 1: ours
        settings = getattr(config, "final_config_dict", None) or {}
        raise CheckpointError(f"{model_file} was not written by recbole_genair's run function (its config is a "
                              f"{type(config).__module__}.{type(config).__name__}, e.g. from RecBole's own quick_start): "
                              f"train the model with `python run_recbole_genair.py --model={settings.get('model', '...')} "
                              f"--dataset={settings.get('dataset', '...')}` and load that checkpoint")


def holds_extended_weights(checkpoint):
    """Whether `state_dict` holds the rows of the added items too (format 1, and a 0.1 model saved again)."""
    return checkpoint.get(FORMAT_KEY) != FORMAT or bool(checkpoint.get("state_dict_extended"))


def is_self_contained(checkpoint):
    """Whether the model can be rebuilt from the checkpoint alone (format 2 with the training columns)."""
    return checkpoint.get(FORMAT_KEY) == FORMAT and "training_columns" in checkpoint and "user_num" in checkpoint


def checkpoint_state(config, model, item_ids, added_item_ids=(), training=None, **extra):
    """The dict of a format-2 checkpoint for `model` (see the module docstring); `training`: `training_inputs`."""
    state = {
        FORMAT_KEY: FORMAT,
        "config": plain_config(config),
        "state_dict": model.state_dict(),
        "other_parameter": model.other_parameter(),
        "item_ids": list(item_ids) if item_ids is not None else None,
        "added_item_ids": list(added_item_ids),
    }
    state.update(training or {})
    state.update(extra)
    return state


def load_model(model_file, trust=False, checkpoint=None, append_added=True):
    """(config, model, item ids in row order) from a checkpoint alone: no dataset file is read, no data built.

    The model is rebuilt from what the checkpoint keeps (`SavedDataset`) and gets every weight from it.
    `checkpoint`: the dict already read from `model_file`; `append_added=False`: without the items added from
    their text (the trained model; item ids of the trained items only), unless the weights hold them
    (`holds_extended_weights`). Checkpoints written before they kept their
    training columns raise `CheckpointError` saying so (`recbole_genair.quick_start.load_data_and_model`
    reads those with their dataset).
    """
    checkpoint = read_checkpoint(model_file, trust=trust) if checkpoint is None else checkpoint
    if not is_self_contained(checkpoint):
        raise CheckpointError(f"{model_file} was written before checkpoints held what the model needs without its "
                              f"dataset: load it with the dataset's files (give data_path, or use "
                              f"recbole_genair.quick_start.load_data_and_model)")
    config = checkpoint["config"]
    config.final_config_dict.update(single_spec=True, local_rank=0)
    model = _model_class(config["model"])(config, SavedDataset(config, checkpoint, stored_llm_rows(checkpoint)[0]))
    model = model.to(config["device"])
    load_weights(model, checkpoint, model_file, append_added)
    ids = [str(i) for i in checkpoint["item_ids"][1:]]
    if append_added or holds_extended_weights(checkpoint):
        return config, model, ids
    return config, model, ids[: len(ids) - len(checkpoint.get("added_item_ids") or [])]


def stored_llm_rows(checkpoint):
    """(LLM table the model was trained on, vectors of the items added after training), from the checkpoint."""
    vectors = (checkpoint.get("other_parameter") or {}).get("llm_item_vectors")
    if vectors is None:
        return None, None
    added = len(checkpoint.get("added_item_ids") or [])
    return vectors[: len(vectors) - added], vectors[len(vectors) - added:]


def load_weights(model, checkpoint, model_file, append_added=True):
    """The checkpoint's weights into `model`, and the rows of the items added from their text.

    Format 2 keeps the trained model's weights and the added items' LLM vectors: the rows are appended after
    loading (as `append_items` made them). Format 1 kept the extended weights: the rows are appended first.
    `append_added=False` (format 2): the trained model only.
    """
    added = list(checkpoint.get("added_item_ids") or [])
    trained_rows, added_vectors = stored_llm_rows(checkpoint)
    extended_state = holds_extended_weights(checkpoint)
    if added and extended_state:
        model.append_items(torch.as_tensor(added_vectors))
    try:
        model.load_state_dict(checkpoint["state_dict"])
    except RuntimeError as err:
        config = checkpoint["config"]
        version = checkpoint.get("recbole_genair_version")
        written = f"recbole_genair {version}" if version else "a recbole_genair that did not record its version"
        reason = str(err).strip().splitlines()
        raise CheckpointError(
            f"{model_file}: its weights do not fit {config['model']} as recbole_genair {__version__} builds it on "
            f"{config['dataset']} ({reason[-1].strip() if reason else err}). The checkpoint was written by "
            f"{written}; if the dataset's files changed since training, restore them, else load it "
            f"with the version that wrote it or train again."
        ) from None
    other = dict(checkpoint.get("other_parameter") or {})
    if added and not extended_state and trained_rows is not None:  # the trained table; append_items extends it
        other["llm_item_vectors"] = trained_rows
    model.load_other_parameter(other or None)
    if added and not extended_state and append_added:
        model.append_items(torch.as_tensor(added_vectors))
    model.added_item_ids = tuple(added) if append_added or extended_state else ()


def _model_class(name):
    """The class of a saved model: recbole_genair's (variants built on first use), else RecBole's."""
    from recbole_genair.runtime import disable_anomaly_detection

    model_class = getattr(importlib.import_module("recbole_genair.model"), name, None)
    if model_class is None:
        from recbole.utils import get_model

        model_class = get_model(name)
        disable_anomaly_detection()  # RecBole's get_model imports sine.py, which turns anomaly detection on
    return model_class
