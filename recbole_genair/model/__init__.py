"""Models of recbole_genair; `recbole_genair.utils.get_model` looks names up here first."""
from recbole_genair.model.genair import BERT4RecGenAIR, GRU4RecGenAIR, SASRecGenAIR

__all__ = ["SASRecGenAIR", "GRU4RecGenAIR", "BERT4RecGenAIR"]
