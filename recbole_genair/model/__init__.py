"""Models of recbole_genair; `recbole_genair.utils.get_model` looks names up here first.

The classes below are written out; `<Backbone><Method>` for RecBole's other sequential backbones
(e.g. NARMGenAIR) is built on first use by `recbole_genair.model.variants`.
"""
from recbole_genair.model.alphafuse import BERT4RecAlphaFuse, GRU4RecAlphaFuse, SASRecAlphaFuse
from recbole_genair.model.faerec import BERT4RecFAERec, GRU4RecFAERec, SASRecFAERec
from recbole_genair.model.genair import BERT4RecGenAIR, GRU4RecGenAIR, SASRecGenAIR
from recbole_genair.model.llmesr import BERT4RecLLMESR, GRU4RecLLMESR, SASRecLLMESR
from recbole_genair.model.llminit import BERT4RecLLMInit, GRU4RecLLMInit, SASRecLLMInit
from recbole_genair.model.tfllmer import BERT4RecTFLLMER, GRU4RecTFLLMER, SASRecTFLLMER

__all__ = [
    "SASRecGenAIR", "GRU4RecGenAIR", "BERT4RecGenAIR",
    "SASRecTFLLMER", "GRU4RecTFLLMER", "BERT4RecTFLLMER",
    "SASRecFAERec", "GRU4RecFAERec", "BERT4RecFAERec",
    "SASRecLLMInit", "GRU4RecLLMInit", "BERT4RecLLMInit",
    "SASRecAlphaFuse", "GRU4RecAlphaFuse", "BERT4RecAlphaFuse",
    "SASRecLLMESR", "GRU4RecLLMESR", "BERT4RecLLMESR",
]


def __getattr__(name):  # NARMGenAIR and the like, built on first use
    import importlib

    return getattr(importlib.import_module("recbole_genair.model.variants"), name)
