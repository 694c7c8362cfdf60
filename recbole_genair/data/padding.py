"""Trailing padding dropped from a batch: exact for models that read right-padded sequences causally.

RecBole pads every history to `MAX_ITEM_LIST_LENGTH` on the right. SASRec (positions counted from the first
item, padding keys masked, causal attention), GRU4Rec and the models built on them give the same output at
every real position whatever follows it, so a batch can be cut to its longest history. With the GenAIR
paper's `MAX_ITEM_LIST_LENGTH: 200` on amazon-office (histories of 11 items on average) this removes most
of the encoder's work. BERT4Rec reads both ways but masks padding keys, so its outputs at real positions do
not depend on trailing padding either; at prediction it writes its mask token after the history and drops
the first column, which needs one padding column to spare (`spare=1`).
"""
from recbole.data.interaction import Interaction


def trim_trailing_padding(interaction, seq_field, spare=0):
    """`interaction` with every `B x L` field (history, per-position targets and negatives, `<field>_list`)
    cut to the longest history's length plus `spare` columns; the same object when nothing can be cut."""
    seq = interaction[seq_field]
    width = seq.size(1)
    used = (seq != 0).any(dim=0).nonzero()
    longest = (int(used.max()) + 1 if len(used) else 1) + spare
    if longest >= width:
        return interaction
    return Interaction({
        name: value[:, :longest] if value.dim() >= 2 and value.size(1) == width else value
        for name, value in interaction.interaction.items()
    })
