"""The settings a run understands, so that a misspelled key is refused instead of silently ignored.

RecBole accepts any key and reads only the ones it knows: `--alpah=0.1` or `--projector_hiden_size=64`
train with the defaults without a word. The known keys are every key in RecBole's YAML files and
ours (`props/`), plus every key RecBole's and this package's code read as `config["key"]`.
"""
import difflib
import functools
import re
from pathlib import Path

import recbole
import yaml

from recbole_genair.paths import PACKAGE_DIR, PROPS_DIR

# `config["key"]`, `config_dict["key"]`, `self.config['key']` in library code
_READ = re.compile(r"config(?:_dict)?\[\s*[\"']([A-Za-z_][A-Za-z0-9_]*)[\"']\s*\]")
# Files whose top-level keys are not settings (dataset download addresses).
_NOT_SETTINGS = {"url.yaml", "kg_url.yaml"}
# Read by RecBole's code through `f"{phase}_..."` / `f"alias_of_{name}"`, or set by RecBole itself.
_DYNAMIC = {"valid_neg_sample_args", "test_neg_sample_args", "alias_of_user_id", "alias_of_item_id",
            "alias_of_entity_id", "alias_of_relation_id", "model", "dataset", "config_files"}


class ConfigKeyError(ValueError):
    """A setting that no model, dataset or trainer of RecBole or recbole_genair reads."""


def _yaml_keys(folder):
    """Top-level keys of every YAML file under `folder`."""
    keys = set()
    for path in Path(folder).rglob("*.yaml"):
        if path.name not in _NOT_SETTINGS:
            keys |= _yaml_keys_in(path)
    return keys


def _yaml_keys_in(path):
    with open(path, encoding="utf-8") as f:
        data = yaml.safe_load(f)
    return {str(k) for k in data} if isinstance(data, dict) else set()


def _code_keys(folder):
    keys = set()
    for path in Path(folder).rglob("*.py"):
        keys.update(_READ.findall(path.read_text(encoding="utf-8", errors="replace")))
    return keys


@functools.lru_cache(maxsize=1)
def _keys():
    """(every setting a run reads, the archetype preprocessor's own settings), computed once."""
    recbole_dir = Path(recbole.__file__).resolve().parent
    keys = _yaml_keys(recbole_dir / "properties") | _code_keys(recbole_dir) | _DYNAMIC
    keys |= _yaml_keys(PROPS_DIR / "model") | _yaml_keys(PROPS_DIR / "dataset")
    keys |= _yaml_keys_in(PROPS_DIR / "overall.yaml") | _code_keys(PACKAGE_DIR)
    archetype = frozenset(_yaml_keys_in(PROPS_DIR / "archetype.yaml") - keys)
    # props/protocol holds presets for both steps: its archetype keys are not a training run's
    return frozenset(keys | (_yaml_keys(PROPS_DIR / "protocol") - archetype)), archetype


def known_config_keys():
    """Every setting of RecBole 1.2.1 and of this package that a run reads (a frozenset)."""
    return _keys()[0]


def archetype_keys():
    """Settings only the archetype preprocessor reads (`props/archetype.yaml`: prompt, LLM, generation)."""
    return _keys()[1]


def closest_keys(key, known, n=3):
    """Known keys that look like `key` (a typo, or another case), best first."""
    by_lower = {k.lower(): k for k in known}
    matches = difflib.get_close_matches(key.lower(), list(by_lower), n=n, cutoff=0.6)
    return [by_lower[m] for m in matches]


def check_config_keys(sources, known=None):
    """Refuse keys no code reads; `sources`: {where the keys came from: iterable of keys}.

    The message names each unknown key, where it was given and the closest known keys.
    """
    known = known_config_keys() if known is None else known
    problems = []
    for where, keys in sources.items():
        for key in keys:
            if key in known:
                continue
            close = closest_keys(str(key), known)
            hint = f"did you mean {' or '.join(close)}?" if close else "no known setting is close"
            if key in archetype_keys():
                hint = ("a setting of the archetype step (props/archetype.yaml), not of training: give it to "
                        "`python -m recbole_genair.archetype`")
            problems.append(f"  {key!r} ({where}): {hint}")
    if problems:
        raise ConfigKeyError(
            "unknown settings, which no model, dataset or trainer reads (they would be ignored):\n"
            + "\n".join(problems)
            + "\nThe settings are RecBole's (https://recbole.io/docs/user_guide/config_settings.html) and "
            "those in recbole_genair's props/ folder."
        )
