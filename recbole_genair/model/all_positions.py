"""All-position training (`train_mode: all_positions`): which models support it, and the causal backbones' loss.

SASRec and GRU4Rec are causal (position j reads items 1 .. j only), so one pass over a window gives the
sequence output of every (prefix, next item) pair; RecBole's own ranking loss (`loss_fct`: CE over all
items, or BPR with one sampled negative) is then taken at every real position and averaged over them, as
the authors' code averages its BCE (the paper's eq. 17 sums). BERT4Rec reads the whole sequence, so it
keeps its own cloze loss, over whole windows. Any other model reads the whole sequence at once (a position
would see its own target) and trains in prefix mode only.
"""
from recbole.model.abstract_recommender import SequentialRecommender
from recbole.model.sequential_recommender import BERT4Rec, GRU4Rec, SASRec

from recbole_genair.data.train_modes import CLOZE, NEXT_ITEM, check_train_mode
from recbole_genair.model.backbone import LLMItemEmbeddingMixin
from recbole_genair.model.layers import shared_table

BACKBONE_OBJECTIVES = ((SASRec, NEXT_ITEM), (GRU4Rec, NEXT_ITEM), (BERT4Rec, CLOZE))


class TrainModeError(ValueError):
    """A model asked for a training mode it does not support."""


def train_objective(model_class, train_mode):
    """None (prefix mode), NEXT_ITEM or CLOZE: what `model_class` trains on with `train_mode`.

    A model qualifies when it runs a supported backbone's own `forward` (or declares `forward_runs_backbone`: its
    forward only calls the backbone's, e.g. once per view), and when every class of it that
    changes `calculate_loss` also gives its extra terms as `auxiliary_losses` (all-position training
    replaces the backbone's ranking loss only and must not drop them).
    """
    if check_train_mode(train_mode) == "prefix":
        return None
    name = model_class.__name__
    backbone, objective = next(((b, o) for b, o in BACKBONE_OBJECTIVES if issubclass(model_class, b)), (None, None))
    own_forward = model_class.forward is backbone.forward if backbone is not None else False
    if backbone is None or not (own_forward or getattr(model_class, "forward_runs_backbone", False)):
        why = ("it reads the whole sequence at once, so a position would see its own target"
               if issubclass(model_class, SequentialRecommender) else "it is not a sequential model")
        raise TrainModeError(f"{name} supports train_mode: prefix only ({why}); train_mode: all_positions is for "
                             f"SASRec, GRU4Rec, BERT4Rec and the models built on them.")
    for cls in model_class.__mro__[: model_class.__mro__.index(backbone)]:
        if "calculate_loss" in vars(cls) and cls is not LLMItemEmbeddingMixin and "auxiliary_losses" not in vars(cls):
            raise TrainModeError(
                f"{name} supports train_mode: prefix only: {cls.__name__}.calculate_loss adds to the ranking loss, "
                f"which all_positions would drop; give those terms as {cls.__name__}.auxiliary_losses(interaction).")
    return objective


def _every_position(output, gather_index):
    return output


def sequence_outputs(model, item_seq, item_seq_len):
    """`B x L x h` output of a causal backbone at every position: its own `forward`, without the final gather."""
    model.gather_indexes = _every_position  # shadows SequentialRecommender.gather_indexes on this instance
    try:
        output = model.forward(item_seq, item_seq_len)
    finally:
        del model.gather_indexes
    if output.dim() != 3:
        raise TypeError(f"{type(model).__name__}.forward does not end with gather_indexes: no per-position output")
    return output


def next_item_loss(model, interaction, excluded_items=None):
    """The backbone's ranking loss (`loss_type` CE or BPR) at every real position of an all-position batch.

    `excluded_items` (item ids, CE only): left out of the softmax, as items that do not exist yet are.
    """
    targets = interaction[model.POS_ITEM_ID]
    if targets.dim() != 2:
        raise TypeError("train_mode: all_positions needs the all-position training loader "
                        "(recbole_genair.quick_start.prepare_data), which gives a next item per position")
    output = sequence_outputs(model, interaction[model.ITEM_SEQ], interaction[model.ITEM_SEQ_LEN])
    real = targets > 0
    output, targets = output[real], targets[real]
    if model.loss_type == "BPR":
        negatives = interaction[model.NEG_ITEM_ID][real]
        pos_score = (output * model.item_embedding(targets)).sum(-1)
        neg_score = (output * model.item_embedding(negatives)).sum(-1)
        return model.loss_fct(pos_score, neg_score)
    logits = output @ model.item_embedding.weight.t()
    if excluded_items is not None:
        logits = logits.index_fill(1, excluded_items, float("-inf"))
    return model.loss_fct(logits, targets)


def all_position_losses(model, interaction, excluded_items=None):
    """The model's training losses with its ranking loss at every position (auxiliary losses unchanged)."""
    with shared_table(model.item_embedding):
        rank = next_item_loss(model, interaction, excluded_items)
        extra = model.auxiliary_losses(interaction) if hasattr(model, "auxiliary_losses") else ()  # RecBole's: none
    return (rank, *extra) if extra else rank
