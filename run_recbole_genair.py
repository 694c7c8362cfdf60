"""Train and evaluate a model, e.g. `python run_recbole_genair.py --model=SASRecGenAIR --dataset=ml-100k`.

Any RecBole setting can follow as --key=value (RecBole's command-line convention);
--config_files takes YAML files separated by spaces.
"""
from recbole_genair.commands.train import main

if __name__ == "__main__":
    main()
