"""The command layer: each entry point parses its arguments, then calls the library below it.

- `train`: `run_recbole_genair.py` / `recbole-genair`: one run, or `--compare`, `--ablation`, `--tune`
- `compare`: the driver that trains every (model, seed) of a comparison, then writes its report
- `tune`: hyper-parameter search with RecBole's `HyperTuning`
- `recommend`: `python -m recbole_genair.recommend`: top-k items of a trained model, or its item table
- `serve`: `python -m recbole_genair.serve`: the same model behind an HTTP service (`recbole_genair.serving`)
- `add_items`: `python -m recbole_genair.add_items`: items added to a trained model from their text
- `tables`: `python -m recbole_genair.tables`: the documentation's result tables, from the run records

Nothing below this layer imports it.
"""
