"""Every LLM item representation of the package on every RecBole sequential backbone that allows it.

`<Backbone><Method>` (e.g. `NARMGenAIR`, `CaserTFLLMER`, `STAMPFAERec`, `SRGNNLLMInit`) is the
method's mixin put before RecBole's class, built on first use: the backbone builds its own item table,
then the method replaces or re-initialises it (`LLMItemEmbeddingMixin`), so RecBole's forward and
scoring code run unchanged. That works where the backbone reads items only through `item_embedding`
(`.weight` for scoring, calls for the input side). Backbones with other item tables, item features,
a knowledge graph or a pre-training stage are refused with the reason (`REFUSED`).
"""
import importlib

from recbole_genair.model.faerec import FAERec
from recbole_genair.model.genair import GenAIR
from recbole_genair.model.llminit import LLMInit
from recbole_genair.model.tfllmer import TFLLMER

METHODS = {"GenAIR": GenAIR, "TFLLMER": TFLLMER, "FAERec": FAERec, "LLMInit": LLMInit}

_BOTH = "item_embedding, on the input and the scoring side"
# Backbone -> which of its item tables the LLM representation replaces (README "Backbones").
SUPPORTED = {
    "SASRec": _BOTH,
    "GRU4Rec": _BOTH,
    "BERT4Rec": _BOTH + "; the mask token keeps a trainable row, the output bias stays per item",
    "NARM": _BOTH,
    "STAMP": _BOTH,
    "Caser": _BOTH,
    "NextItNet": _BOTH,
    "SRGNN": _BOTH + " (the session-graph nodes)",
    "GCSAN": _BOTH + " (the session-graph nodes)",
    "LightSANs": _BOTH,
    "CORE": _BOTH + " (CORE L2-normalises both)",
    "FEARec": _BOTH + " (needs n_layers >= 2, as FEARec itself)",
    "SINE": _BOTH,
    "HRM": _BOTH,
    "SHAN": _BOTH,
    "SASRecCPR": _BOTH + " (its Softmax-CPR heads score against it)",
    "GRU4RecCPR": _BOTH + " (its Softmax-CPR heads score against it)",
    "TransRec": _BOTH + " (the translation distances); its per-item bias stays a trainable ID scalar",
}
# Class attributes a backbone's variants need beyond the method's.
_EXTRA = {
    "TransRec": {"cannot_add_items": "TransRec adds a trained per-item bias to every score: a new item has none"},
}

_SECOND_TABLE = "scores with one item-ID table and reads the history through another ({tables}); the LLM table would replace only one of them, so the other side would stay random IDs"
REFUSED = {
    "HGN": _SECOND_TABLE.format(tables="item_embedding_for_prediction, item_embedding"),
    "NPE": _SECOND_TABLE.format(tables="item_embedding, embedding_seq_item"),
    "FOSSIL": "has its own setting named alpha (the weight of its item-similarity term), the name of GenAIR's "
              "calibration weight; one key cannot mean both",
    "FPMC": "has no item_embedding: four factor tables (UI_emb, IU_emb, LI_emb, IL_emb) each hold items",
    "RepeatNet": "has no item_embedding: its item_matrix and the explore decoder's item output layer are ID tables",
    "DIN": "is a context-aware model: items enter through its feature embedding layer, not an item table",
    "DIEN": "is a context-aware model: items enter through its feature embedding layer, not an item table",
    "FDSA": "reads item feature fields through a second, feature embedding table (selected_features)",
    "SASRecF": "reads item feature fields through a second, feature embedding table (selected_features)",
    "GRU4RecF": "reads item feature fields through a second, feature embedding table (selected_features)",
    "S3Rec": "pre-trains its item table on item attributes (a separate stage) before fine-tuning",
    "GRU4RecKG": "reads a knowledge-graph entity table for each item beside its item table",
    "KSR": "reads a knowledge-graph entity table for each item beside its item table",
}

_BUILT = {}


class UnsupportedBackboneError(ValueError):
    """`<Backbone><Method>` for a backbone whose item table the method cannot replace."""


def split_name(name):
    """(backbone, method) of `name` if it ends with a method's name, else None."""
    for method in METHODS:
        if name.endswith(method) and len(name) > len(method):
            return name[: -len(method)], method
    return None


def variant_names():
    """Every `<Backbone><Method>` name that `variant_class` builds."""
    return [backbone + method for backbone in SUPPORTED for method in METHODS]


def variant_class(name):
    """The class `<Backbone><Method>`, built once; None when `name` ends with no method's name.

    Raises `UnsupportedBackboneError` for a refused or unknown backbone, saying why and listing the
    supported ones.
    """
    parts = split_name(name)
    if parts is None:
        return None
    if name in _BUILT:
        return _BUILT[name]
    backbone, method = parts
    mixin = METHODS[method]
    explicit = getattr(importlib.import_module(mixin.__module__), name, None)  # SASRecGenAIR and the like
    if explicit is not None:
        return explicit
    if backbone not in SUPPORTED:
        reason = (f"{backbone} {REFUSED[backbone]}" if backbone in REFUSED
                  else f"{backbone} is not a RecBole sequential model (names are case-sensitive)")
        raise UnsupportedBackboneError(
            f"no model {name}: {reason}. {method} runs on these backbones: {', '.join(SUPPORTED)} "
            f"(docs/models.md, 'Backbones').")
    module = importlib.import_module("recbole.model.sequential_recommender")
    backbone_class = getattr(module, backbone)
    cls = type(name, (mixin, backbone_class), {
        "__module__": __name__,
        "__doc__": f"{method} on RecBole's {backbone}: the LLM representation replaces its {SUPPORTED[backbone]}.",
        **_EXTRA.get(backbone, {}),
    })
    _BUILT[name] = cls
    return cls


def __getattr__(name):  # pickle and `get_model` find built classes here
    try:
        cls = variant_class(name)
    except UnsupportedBackboneError as err:
        raise AttributeError(str(err)) from None
    if cls is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return cls
