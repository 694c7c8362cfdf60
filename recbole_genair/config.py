"""A RecBole `Config` that knows recbole_genair's models, YAML and datasets."""
from pathlib import Path

import recbole
import yaml
from recbole.config import Config as RecBoleConfig
from recbole.utils import ModelType

import recbole_genair.evaluation  # noqa: F401  (registers the group metrics before any Config is built)
from recbole_genair.config_keys import ConfigKeyError, check_config_keys
from recbole_genair.distributed import init_cpu_process_group, use_cuda
from recbole_genair.model.all_positions import TrainModeError, train_objective
from recbole_genair.paths import DATASET_DIR, PROPS_DIR, shipped_props_file  # noqa: F401  (also imported from here)
from recbole_genair.utils import get_model

RECBOLE_PROPS_DIR = Path(recbole.__file__).resolve().parent / "properties"


class ConfigFileError(ValueError):
    """A YAML settings file that cannot be read."""


class Config(RecBoleConfig):
    """RecBole's configurator with three changes.

    - Model defaults are layered: RecBole's YAML of every RecBole class the model derives from, then
      `props/overall.yaml`, then our `props/model/<Class>.yaml` for every class in the hierarchy, then
      `props/dataset/<dataset>.yaml`. `SASRecGenAIR` therefore starts from SASRec's settings.
    - Command-line `--key=value` pairs are read from `cmd_args` only (not from `sys.argv`), so a
      library call or a test never picks up foreign arguments.
    - Without an explicit `data_path`, `./dataset/<name>` is used if it exists, then our repository's
      `dataset/<name>` (RecBole would force its own copy of ml-100k).
      An explicit `data_path` may also name the dataset folder itself (as the archetype preprocessor's).
    - Keys that no code reads (typos such as `--alpah`) are refused with the closest known key, for
      RecBole's models and ours; a model class from elsewhere may read keys of its own, so its runs
      are not checked. An invalid YAML file is reported with its name and line.
    - A distributed run (`local_rank` set, RecBole's torch.distributed path) without CUDA joins its
      process group with gloo on the CPU (`recbole_genair.distributed`); RecBole's own path is NCCL only.
    Models that read LLM item vectors get the `.itememb` loading settings added (see
    `recbole_genair.data.itememb`). Unpickled (RecBole's `load_data_and_model` reading a checkpoint), it sets
    the numpy aliases RecBole's data code needs, which RecBole's own Config sets only when built.
    """

    def __setstate__(self, state):
        self.__dict__.update(state)
        self.compatibility_settings()

    def __init__(self, model=None, dataset=None, config_file_list=None, config_dict=None, cmd_args=None):
        self._cmd_args = list(cmd_args or [])
        self._file_keys = {}
        super().__init__(model, dataset, config_file_list, config_dict)
        if self.model_class.__module__.split(".")[0] in ("recbole", "recbole_genair"):
            sources = {f"in {file}": keys for file, keys in self._file_keys.items()}
            sources["config_dict"] = self.variable_config_dict
            sources["command line"] = self.cmd_config_dict
            check_config_keys(sources)
        if getattr(self.model_class, "uses_llm_item_embedding", False):
            from recbole_genair.data.itememb import add_itememb_settings

            add_itememb_settings(self.final_config_dict)

    def _load_config_files(self, file_list):
        settings = {}
        for file in file_list or []:
            file = shipped_props_file(file)
            with open(file, "r", encoding="utf-8") as f:
                try:
                    values = yaml.load(f.read(), Loader=self.yaml_loader)
                except yaml.YAMLError as err:
                    mark = getattr(err, "problem_mark", None)
                    where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
                    problem = getattr(err, "problem", None) or str(err)
                    raise ConfigFileError(f"{file} is not valid YAML{where}: {problem}. Fix the file and rerun.") from None
            if values is None:
                values = {}
            if not isinstance(values, dict):
                raise ConfigFileError(f"{file} holds a {type(values).__name__}, not settings: write one 'key: value' per line.")
            self._file_keys[file] = list(values)
            settings.update(values)
        return settings

    def _load_cmd_line(self):
        cmd_config_dict = {}
        for arg in self._cmd_args:
            if not arg.startswith("--") or "=" not in arg:
                raise SyntaxError(f"command line argument {arg!r} is not of the form --key=value")
            key, value = arg[2:].split("=", 1)
            if key in cmd_config_dict and value != cmd_config_dict[key]:
                raise SyntaxError(f"there are duplicate command line arguments for {key!r}")
            cmd_config_dict[key] = value
        return self._convert_config_dict(cmd_config_dict)

    def _init_device(self):
        final = self.final_config_dict
        if "local_rank" in final and not use_cuda(final):
            final["gpu_id"] = ""
            init_cpu_process_group(final)
            return
        super()._init_device()

    def _get_model_and_dataset(self, model, dataset):
        if model is None and "model" in self.external_config_dict:
            model = self.external_config_dict["model"]
        if isinstance(model, str):
            model = get_model(model)
        return super()._get_model_and_dataset(model, dataset)

    def _load_internal_config_dict(self, model, model_class, dataset):
        super()._load_internal_config_dict(model, model_class, dataset)
        files = [RECBOLE_PROPS_DIR / "model" / f"{cls.__name__}.yaml" for cls in self._hierarchy(model_class)]
        files.append(PROPS_DIR / "overall.yaml")
        files += [PROPS_DIR / "model" / f"{cls.__name__}.yaml" for cls in self._hierarchy(model_class)]
        for file in files:
            if file.is_file():
                self._update_internal_config_dict(str(file))
        dataset_file = PROPS_DIR / "dataset" / f"{dataset}.yaml"
        if dataset_file.is_file():
            keys = self._update_internal_config_dict(str(dataset_file)) or {}
            self.parameters["Dataset"] += [k for k in keys if k not in self.parameters["Dataset"]]

    @staticmethod
    def _hierarchy(model_class):
        """Classes of the model (mixins included) from the most general to `model_class` itself."""
        return [cls for cls in reversed(model_class.__mro__) if cls is not object]

    def _set_default_parameters(self):
        final = self.final_config_dict
        if final.get("loss_type") == "BCE":
            # RecBole knows CE and BPR: BCE trains on the same (positive, negative) pairs as BPR, with another
            # loss function, which `build_model` puts in place (`pairwise_loss`).
            final["loss_type"], final["pairwise_loss"] = "BPR", "BCE"
        if (
            final.get("loss_type") == "CE"
            and final.get("MODEL_TYPE") == ModelType.SEQUENTIAL
            and "train_neg_sample_args" not in self.external_config_dict
        ):
            # RecBole's overall.yaml asks for a negative sample that CE sequential models refuse.
            final["train_neg_sample_args"] = None
        super()._set_default_parameters()
        if "data_path" not in self.external_config_dict:
            for root in (Path.cwd() / "dataset", DATASET_DIR):
                if (root / self.dataset).is_dir():
                    self.final_config_dict["data_path"] = str(root / self.dataset)
                    break
        else:
            # RecBole replaces any data_path by its bundled example for ml-100k; a given path always wins here.
            given = Path(self.external_config_dict["data_path"])
            joined = given / self.dataset
            if not joined.is_dir() and (given / f"{self.dataset}.inter").is_file():
                joined = given  # data_path named the dataset folder itself
            self.final_config_dict["data_path"] = str(joined)
        self._check_valid_metric()
        self._resolve_train_mode()
        self._resolve_batch_size()

    def _resolve_train_mode(self):
        """`train_mode: all_positions` from a family's YAML (props/model/SASRec.yaml, ...) falls back to prefix mode
        for a model built on that family that has no all-position path (`describe_training` says so in the log);
        asked for by the user (a YAML file, config_dict or the command line), it is refused by the run instead.
        """
        final = self.final_config_dict
        final["train_mode_fallback"] = None
        if final.get("train_mode") != "all_positions" or "train_mode" in self.external_config_dict:
            return
        try:
            train_objective(self.model_class, "all_positions")
        except TrainModeError as err:
            final["train_mode"], final["train_mode_fallback"] = "prefix", str(err)

    def describe_training(self):
        """One line for the log: the training mode and patience of this run, and whether they are the defaults."""
        final = self.final_config_dict
        mode = final.get("train_mode") or "prefix"
        given = [k for k in ("train_mode", "stopping_step") if k in self.external_config_dict]
        line = (f"training: train_mode {mode}, early stopping after {final.get('stopping_step')} validations without "
                f"improvement on {final.get('valid_metric')} "
                f"({'; '.join(f'{k} as given' for k in given) or 'the defaults'} for {self.model_class.__name__})")
        if final.get("train_mode_fallback"):
            line += f"; its family defaults to all_positions, but {final['train_mode_fallback'].split(';')[0]}"
        elif mode == "prefix" and "train_mode" not in given:
            line += "; all_positions is the default of SASRec, GRU4Rec and the models on them only"
        return line

    def _resolve_batch_size(self):
        """`train_batch_size` may give one value per `train_mode` ({prefix: 2048, all_positions: 128}): a batch
        counts samples in prefix mode but whole sequences in all_positions mode. The current mode's value is kept.
        """
        final = self.final_config_dict
        per_mode = final.get("train_batch_size")
        if not isinstance(per_mode, dict):
            return
        mode = final.get("train_mode") or "prefix"
        if mode not in per_mode:
            raise ConfigKeyError(f"train_batch_size gives {', '.join(f'{k}: {v}' for k, v in per_mode.items())} but "
                                 f"no value for train_mode: {mode}; add '{mode}: <size>' or give one number.")
        final["train_batch_size"] = int(per_mode[mode])

    def _check_valid_metric(self):
        """`valid_metric` must be computed: its metric in `metrics` and its cut-off in `topk`."""
        final = self.final_config_dict
        valid = str(final.get("valid_metric") or "")
        name, _, k = valid.partition("@")
        metrics = final.get("metrics") or []
        metrics = [metrics] if isinstance(metrics, str) else list(metrics)
        topk = final.get("topk") or []
        topk = [topk] if isinstance(topk, int) else list(topk)
        if name.lower() not in [m.lower() for m in metrics]:
            raise ValueError(f"valid_metric={valid} is not computed: metrics={metrics} has no {name}; add it "
                             f"to metrics or choose another valid_metric (default NDCG@10).")
        if k and (not k.isdigit() or int(k) not in topk):
            raise ValueError(f"valid_metric={valid} is not computed: topk={topk} has no {k}; add it to topk.")
