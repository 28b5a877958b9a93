"""Train, validate, test or predict with any qg_lightning model through LightningCLI.

python examples/fit.py fit --config examples/configs/quickstart.yaml
python examples/fit.py fit --config examples/configs/quickstart.yaml --data.root /path/to/folder
"""

from qg_lightning.cli import cli_main

if __name__ == "__main__":
    cli_main()
