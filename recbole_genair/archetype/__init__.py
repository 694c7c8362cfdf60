"""GenAIR's first stage: archetype texts and `.itememb` vectors for a RecBole dataset (paper section 3.1).

Python API: `run_archetype(load_settings(dataset, config_file_list, config_dict))`.
Command line: `python -m recbole_genair.archetype --dataset=ml-100k [--key=value ...]`.
"""
from recbole_genair.archetype.pipeline import format_summary, run_archetype
from recbole_genair.archetype.settings import load_settings

__all__ = ["run_archetype", "load_settings", "format_summary"]
