"""Fine-tune a Japanese BERT text classifier: data files -> a Hugging Face model directory.

Quick start (offline, ships with the repo; a small BERT trained from scratch on demo reviews):
    accelerate launch train.py --config configs/quickstart.yaml

Fine-tune a pretrained model (any hub id or local directory):
    accelerate launch train.py --model_name_or_path cl-tohoku/bert-base-japanese-v3 \
        --train_file train.csv --validation_file dev.csv --text_column text --label_column label \
        --output_dir outputs/my-model

Masked-LM pretraining on unlabeled text (one text per line), then fine-tune its output:
    accelerate launch train.py --task mlm --from_scratch small --train_file unlabeled.txt --output_dir outputs/mlm
    accelerate launch train.py --model_name_or_path outputs/mlm --train_file train.csv --output_dir outputs/clf

Eight Optuna trials around the given values, then the final model with the best (one process):
    python train.py --from_scratch mini --train_file train.csv --hp_search 8 --output_dir outputs/searched

Two CPU processes (gloo), DeepSpeed, multi-GPU: see accelerate_configs/ and the README.
Every option: python train.py --help (YAML recipes in configs/ take the same names).
"""

import sys

from jbert.train.cli import run

if __name__ == "__main__":
    sys.exit(run())
