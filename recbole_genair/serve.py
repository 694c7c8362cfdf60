"""`python -m recbole_genair.serve --checkpoint=... --host=127.0.0.1 --port=8000` (`recbole_genair.commands.serve`).

An entry point only, like `run_recbole_genair.py`: the app is `recbole_genair.serving.create_app`.
"""
from recbole_genair.commands.serve import main

if __name__ == "__main__":
    main()
