"""recbole-genair: LLM-enhanced item representations for sequential recommendation in RecBole."""
__version__ = "0.2.0"
