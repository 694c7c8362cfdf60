"""Archetype preprocessor settings: props/archetype.yaml, then YAML files, then a dict, then --key=value."""
import hashlib
import json
from pathlib import Path

import yaml

from recbole_genair.config import DATASET_DIR, PROPS_DIR
from recbole_genair.config_keys import closest_keys

DEFAULTS_FILE = PROPS_DIR / "archetype.yaml"
# Settings that change the texts or the vectors; work files made with other values are not mixed in.
SIGNATURE_KEYS = (
    "llm_model", "llm_gguf_file", "backend", "api_model", "api_mode", "prompt_fields", "max_field_chars",
    "prompt_intro", "prompt_name_clause", "prompt_clause", "prompt_question", "max_new_tokens", "do_sample",
    "temperature", "top_p", "repetition_penalty", "seed", "dtype",
)

# Keys added after stores existed: in the signature only when they differ from these values, so that work
# folders and `.itememb` files made before them keep their signature.
LATER_SIGNATURE_KEYS = {"prompt_join": " ", "prompt_clause_separator": " ", "archetype_views": "both"}


class SettingsError(ValueError):
    """A setting that cannot be used."""


def parse_cmd_args(args):
    """`--key=value` pairs, values read as YAML (numbers, booleans, lists, dicts), else kept as text.

    Text is what RecBole's command line makes of values such as the interval `[5,inf)`.
    """
    parsed = {}
    for arg in args:
        if not arg.startswith("--") or "=" not in arg:
            raise SettingsError(f"command line argument {arg!r} is not of the form --key=value")
        key, value = arg[2:].split("=", 1)
        try:
            parsed[key] = yaml.safe_load(value) if value else None
        except yaml.YAMLError:
            parsed[key] = value
    return parsed


def _yaml_problem(err):
    """'line 3, column 11: expected ...; while parsing a flow mapping from line 2' from a PyYAML error."""
    mark, context = getattr(err, "problem_mark", None), getattr(err, "context", None)
    text = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    text += str(getattr(err, "problem", None) or err)
    if context and getattr(err, "context_mark", None) is not None:
        text += f"; {context} from line {err.context_mark.line + 1}"
    return text


def read_yaml_file(file):
    """The settings of one YAML file; a broken file is named with the line of the problem."""
    with open(file, encoding="utf-8") as f:
        try:
            values = yaml.safe_load(f)
        except yaml.YAMLError as err:
            raise SettingsError(f"{file} is not valid YAML ({_yaml_problem(err)}); fix that line.") from None
    if values is not None and not isinstance(values, dict):
        raise SettingsError(f"{file} holds a {type(values).__name__}, not key: value settings "
                            f"(e.g. max_new_tokens: 64, one per line).")
    return values or {}


def load_settings(dataset=None, config_file_list=None, config_dict=None, cmd_args=None):
    settings = read_yaml_file(DEFAULTS_FILE)
    sources = {}  # setting -> where it was given, for the message about unknown keys
    layers = [(read_yaml_file(file), str(file)) for file in config_file_list or []]
    layers += [(config_dict or {}, "config_dict"), (parse_cmd_args(cmd_args or []), "command line")]
    for values, source in layers:
        settings.update(values)
        sources.update(dict.fromkeys(values, source))
    if dataset is not None:
        settings["dataset"] = dataset
    if not settings.get("dataset"):
        raise SettingsError("no dataset given: pass --dataset=<name> (the folder that holds <name>.inter)")
    known = _known_keys()
    unknown = [key for key in settings if key not in known]
    if unknown:
        raise SettingsError(
            f"unknown archetype settings: {', '.join(_unknown_key(key, sources[key], known) for key in unknown)}. "
            f"The known ones and their defaults are in {DEFAULTS_FILE}."
        )
    return resolve_paths(settings)


def _unknown_key(key, source, known):
    # config_files is a flag of the command line, not a setting, but a likely target of a typo there
    close = closest_keys(str(key), known + (["config_files"] if source == "command line" else []))
    hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    return f"{key!r} ({source}{hint})"


def _known_keys():
    return list(read_yaml_file(DEFAULTS_FILE)) + ["dataset", "merge", "pca_only"]


def resolve_paths(settings):
    name = settings["dataset"]
    if settings.get("data_path"):
        data_dir = Path(settings["data_path"])
        if not (data_dir / f"{name}.inter").is_file() and (data_dir / name / f"{name}.inter").is_file():
            data_dir = data_dir / name  # RecBole's convention: data_path is the parent folder
    else:
        data_dir = next((d / name for d in (Path.cwd() / "dataset", DATASET_DIR) if (d / name).is_dir()), Path(name))
    settings["data_path"] = str(data_dir)
    settings["output_path"] = str(Path(settings.get("output_path") or data_dir))
    settings["work_dir"] = str(Path(settings.get("work_dir") or Path(settings["output_path"]) / f"{name}.archetype-work"))
    return settings


def signature(settings):
    """A short hash of everything that shapes the texts and vectors, plus the values themselves."""
    values = {k: settings.get(k) for k in SIGNATURE_KEYS}
    values.update({k: settings.get(k, v) for k, v in LATER_SIGNATURE_KEYS.items() if settings.get(k, v) != v})
    digest = hashlib.sha256(json.dumps(values, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return digest, values


# Where the files are, and how a run proceeds: not part of what an item's vector is made from.
_RUN_KEYS = ("dataset", "data_path", "output_path", "work_dir", "overwrite", "shard", "merge", "pca_only", "shards",
             "threads")


def prompt_settings(settings):
    """The settings that turn an item's metadata into its vector (prompt, LLM, generation, pooling), JSON-ready.

    Stored beside the `.itememb`, so that items added after training get their vectors the same way.
    """
    return json.loads(json.dumps({k: v for k, v in settings.items() if k not in _RUN_KEYS}, default=str))
