"""Hit and NDCG@K restricted to users whose target item is head, tail or cold, as RecBole metrics.

Head = the `head_ratio` (default 0.2) most popular items by training interactions; cold = items with
no training interaction; tail = the rest. Registered into RecBole's metric registry when this package
is imported, so `metrics: [NDCG, TailNDCG]` and `valid_metric: TailNDCG@10` work in any run.
A group without users reports NaN. Needs `LLMRecTrainer` (it collects each user's target item).
"""
import numpy as np
import torch
from recbole.evaluator import register
from recbole.evaluator.base_metric import TopkMetric
from recbole.evaluator.metrics import NDCG, Hit
from recbole.utils import EvaluatorType

from recbole_genair.data.popularity import head_items

TARGET_ITEMS = "rec.target_items"
TRAIN_POPULARITY = "data.train_popularity"


def item_groups(popularity, head_ratio=0.2):
    """Integer group per item id: 0 head, 1 tail, 2 cold (never in training); padding is -1."""
    popularity = np.asarray(popularity)
    groups = np.where(popularity > 0, 1, 2)
    groups[head_items(popularity, head_ratio) & (popularity > 0)] = 0
    groups[0] = -1
    return groups


class _GroupMetric(TopkMetric):
    """Base: RecBole's `base` metric (Hit or NDCG) averaged over the users whose target is in `group`."""

    metric_type = EvaluatorType.RANKING
    metric_need = ["rec.topk", TARGET_ITEMS, TRAIN_POPULARITY]
    group = None  # 0 head, 1 tail, 2 cold
    base = None  # RecBole metric class whose per-user values are averaged

    def __init__(self, config):
        super().__init__(config)
        self.head_ratio = config["head_ratio"]
        self.per_user = self.base(config)

    def calculate_metric(self, dataobject):
        pos_index, pos_len = self.used_info(dataobject)
        targets = dataobject.get(TARGET_ITEMS).cpu().numpy()
        groups = item_groups(np.asarray(dataobject.get(TRAIN_POPULARITY)), self.head_ratio)
        in_group = groups[targets] == self.group
        if self.base is Hit:
            values = self.per_user.metric_info(pos_index)
        else:
            values = self.per_user.metric_info(pos_index, pos_len)
        name = self.__class__.__name__.lower()
        result = {}
        for k in self.topk:
            column = values[in_group, k - 1]
            result[f"{name}@{k}"] = round(float(column.mean()), self.decimal_place) if column.size else float("nan")
        return result


GROUP_METRICS = {
    f"{group}{base.__name__}": type(
        f"{group}{base.__name__}", (_GroupMetric,),
        {"group": index, "base": base, "__doc__": f"{base.__name__}@K over users whose target item is {group.lower()}."},
    )
    for index, group in enumerate(("Head", "Tail", "Cold"))
    for base in (Hit, NDCG)
}


def register_group_metrics():
    """Add HeadHit, HeadNDCG, TailHit, TailNDCG, ColdHit, ColdNDCG to RecBole's metric registry."""
    for name, cls in GROUP_METRICS.items():
        key = name.lower()
        register.metrics_dict[key] = cls
        register.metric_information[key] = cls.metric_need
        register.metric_types[key] = cls.metric_type


def collect_target_items(collector, scores, positive_u, positive_i):
    """Store each evaluated user's target item (the first one when a user has several)."""
    if collector.register.need(TARGET_ITEMS):
        rows, first = np.unique(positive_u.cpu().numpy(), return_index=True)
        targets = torch.zeros(scores.size(0), dtype=torch.long)
        targets[torch.from_numpy(rows)] = positive_i.cpu()[torch.from_numpy(first)]
        collector.data_struct.update_tensor(TARGET_ITEMS, targets)
