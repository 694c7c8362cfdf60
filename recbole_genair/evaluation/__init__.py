"""Evaluation: group metrics (registered into RecBole on import), entropy, comparison reports."""
from recbole_genair.evaluation.group_metrics import GROUP_METRICS, register_group_metrics

register_group_metrics()

__all__ = ["GROUP_METRICS", "register_group_metrics"]
