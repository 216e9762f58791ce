"""The training command line (`train.py`, `jbert-train`): parse the options, run the one loop.

    python train.py --config configs/quickstart.yaml             # classification (or regression)
    python train.py --task mlm --from_scratch small --train_file unlabeled.txt --output_dir outputs/mlm
    python train.py --config configs/quickstart.yaml --hp_search 8   # Optuna trials, then the final model

Every option: `python train.py --help` (jbert.train.config); YAML recipes in configs/ take the same names.
"""

from __future__ import annotations

import sys
from typing import Optional, Sequence

from jbert.core.errors import run_cli


def main(argv: Optional[Sequence[str]] = None) -> None:
    """Parse options (flags over YAML) and train: the task --task names, or an --hp_search first."""
    from jbert.train.config import parse_config

    config = parse_config(argv)
    if config.hp_search:
        from jbert.train.hp_search import run_hp_search

        run_hp_search(config)
    else:
        from jbert.train.loop import train

        train(config)


def run(argv: Optional[Sequence[str]] = None) -> int:
    """Console-script entry point (`jbert-train`): `main` with a UserError turned into its message and exit 2."""
    return run_cli(main, argv)


if __name__ == "__main__":  # python -m jbert.<stage>.cli, and `accelerate launch -m jbert.train.cli` for several processes
    sys.exit(run())
