"""Archetype preprocessor settings: props/archetype.yaml, then YAML files, then a dict, then --key=value."""
import hashlib
import json
from pathlib import Path

import yaml

from recbole_genair.config import DATASET_DIR, PROPS_DIR

DEFAULTS_FILE = PROPS_DIR / "archetype.yaml"
# Settings that change the texts or the vectors; work files made with other values are not mixed in.
SIGNATURE_KEYS = (
    "llm_model", "llm_gguf_file", "backend", "api_model", "api_mode", "prompt_fields", "max_field_chars",
    "prompt_intro", "prompt_name_clause", "prompt_clause", "prompt_question", "max_new_tokens", "do_sample",
    "temperature", "top_p", "repetition_penalty", "seed", "dtype",
)


class SettingsError(ValueError):
    """A setting that cannot be used."""


def parse_cmd_args(args):
    """`--key=value` pairs, values read as YAML scalars (numbers, booleans, lists, dicts)."""
    parsed = {}
    for arg in args:
        if not arg.startswith("--") or "=" not in arg:
            raise SettingsError(f"command line argument {arg!r} is not of the form --key=value")
        key, value = arg[2:].split("=", 1)
        parsed[key] = yaml.safe_load(value) if value else None
    return parsed


def load_settings(dataset=None, config_file_list=None, config_dict=None, cmd_args=None):
    with open(DEFAULTS_FILE, encoding="utf-8") as f:
        settings = yaml.safe_load(f)
    for file in config_file_list or []:
        with open(file, encoding="utf-8") as f:
            settings.update(yaml.safe_load(f) or {})
    settings.update(config_dict or {})
    settings.update(parse_cmd_args(cmd_args or []))
    if dataset is not None:
        settings["dataset"] = dataset
    if not settings.get("dataset"):
        raise SettingsError("no dataset given: pass --dataset=<name> (the folder that holds <name>.inter)")
    unknown = sorted(set(settings) - set(_known_keys()))
    if unknown:
        raise SettingsError(f"unknown archetype settings {unknown}; the known ones are listed in {DEFAULTS_FILE}")
    return resolve_paths(settings)


def _known_keys():
    with open(DEFAULTS_FILE, encoding="utf-8") as f:
        return list(yaml.safe_load(f)) + ["dataset", "merge", "pca_only"]


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
    digest = hashlib.sha256(json.dumps(values, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return digest, values
