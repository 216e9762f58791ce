"""`--task mlm`: masked-LM pretraining of BERT on unlabeled text, a task of the one training loop.

    unlabeled texts (.txt one per line, or any table with --text_column)
      -> tokenizer: the checkpoint's (continued pretraining) or WordPiece built from these texts (--from_scratch)
      -> sequences: packed to --max_length (or one text each, truncated) with MeCab word boundaries
      -> BertForMaskedLM trained with whole-word masking; validation perplexity = exp(masked-token loss)
      => MODEL DIR: save_pretrained model + tokenizer (+ jbert.json, metrics.json, card, plots) that
         `train.py --model_name_or_path DIR` fine-tunes with a fresh classification head

`MaskedLMTask` satisfies jbert.train.tasks.Task, so jbert.train.loop runs it like classification:
the launch modes (DDP, DeepSpeed ZeRO-2/3, FSDP), checkpoints (--checkpointing_steps, --resume auto),
the length-grouped sampler, AdamW and the schedule, early stopping, best weights (the lowest
validation loss), the model-directory writer and the multi-process failure message are shared; only
the data, the model, the evaluation (perplexity) and the report differ.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import Accelerator
from torch.utils.data import DataLoader
from transformers.utils import ModelOutput

from jbert.core.artifacts import JbertSettings
from jbert.core.errors import UserError
from jbert.core.normalize import NormalizationConfig
from jbert.data.unlabeled import read_unlabeled_corpus, split_unlabeled
from jbert.train.checkpoint import TrainerState
from jbert.train.config import TrainConfig
from jbert.train.dataloaders import LengthGroupedSampler
from jbert.train.mlm_data import WholeWordMaskCollator, build_sequences, premask, tokenize_with_word_starts
from jbert.train.modeling import load_run_tokenizer, scratch_model_config, set_dropout
from jbert.train.optimization import Schedule
from jbert.train.task_protocol import RunFacts, TaskData

logger = logging.getLogger("jbert")

MLM_INPUTS = ("input_ids", "attention_mask", "token_type_ids", "labels")


class MaskedLMTask:
    """Unlabeled texts -> a BertForMaskedLM; the best weights have the lowest validation loss."""

    name = "mlm"
    evaluates_starting_point = True  # the perplexity of the starting point: what the training improved on

    def load_data(self, config: TrainConfig, accelerator: Accelerator) -> TaskData:
        """The corpus read and split, the tokenizer, the packed training and validation sequences."""
        tokenizer, train_sequences, eval_sequences, data_stats = load_mlm_data(config, accelerator)
        settings = JbertSettings(
            normalization=NormalizationConfig(config.nfkc, config.remove_control, config.normalize_whitespace),
            max_length=config.max_length, text_column=config.text_column,
        )
        return TaskData(tokenizer, train_sequences, eval_sequences, settings, best_metric="loss",
                        greater_is_better=False, source=data_stats)

    def build_model(self, config: TrainConfig, accelerator: Accelerator, data: TaskData) -> torch.nn.Module:
        """BertForMaskedLM (random or from the checkpoint) whose head runs at the masked positions only."""
        return MaskedPositionsLM(build_mlm_model(config, data.tokenizer))

    def dataloaders(self, config: TrainConfig, accelerator: Accelerator, data: TaskData, schedule: Schedule) -> tuple:
        """Length-grouped training batches masked anew each epoch; validation masked once, the same every time."""
        sampler = LengthGroupedSampler([len(s["input_ids"]) for s in data.train_set], schedule.examples_per_step,
                                       config.seed, config.group_by_length)
        pad_multiple = 8 if accelerator.mixed_precision != "no" else None
        collator = WholeWordMaskCollator(data.tokenizer, config.mlm_probability, pad_multiple, seed=config.seed,
                                         sampler=sampler)
        eval_set = premask(data.eval_set, collator, config.seed)
        # Own generator: iterating must not draw from the global RNG that dropout uses (exact resume).
        train_dataloader = DataLoader(data.train_set, batch_size=config.per_device_train_batch_size, sampler=sampler,
                                      collate_fn=collator, num_workers=config.dataloader_num_workers,
                                      generator=torch.Generator().manual_seed(config.seed))
        eval_dataloader = DataLoader(eval_set, batch_size=config.per_device_eval_batch_size, collate_fn=collator)
        return train_dataloader, eval_dataloader

    def evaluate(self, model: torch.nn.Module, dataloader, accelerator: Accelerator, data: TaskData) -> dict:
        """Validation loss over every masked token of all processes, and its perplexity."""
        return evaluate_mlm(model, dataloader, accelerator)

    def write_files(self, directory: Path, config: TrainConfig, data: TaskData, state: TrainerState,
                    facts: RunFacts) -> dict:
        """No data files of its own; returns metrics.json's content (best and first perplexity, corpus)."""
        best_record = next(h for h in state.history if h["step"] == state.best_step and "eval_loss" in h)
        first_record = next(h for h in state.history if "eval_loss" in h)
        return {
            "task": "mlm", "best": {"step": state.best_step, "metric": "loss", "value": state.best_metric},
            "validation": {"loss": best_record["eval_loss"], "perplexity": best_record["eval_perplexity"]},
            "first_evaluation": {"step": first_record["step"], "perplexity": first_record["eval_perplexity"]},
            "history": state.history, "data": {"train_file": config.train_file,
                                               "validation_file": config.validation_file, **data.source},
            "global_step": state.global_step, "train_seconds": facts.throughput["train_seconds"],
        }

    def write_report(self, directory: Path, config: TrainConfig, data: TaskData, metrics: dict) -> None:
        """The perplexity curve and the card that says how to fine-tune from this directory."""
        from jbert.train.report import write_mlm_card, write_perplexity_plot

        plots = write_perplexity_plot(directory, metrics["history"])
        write_mlm_card(directory, name=Path(config.output_dir).name,
                       model_source=config.model_name_or_path or f"scratch ({config.from_scratch} BERT)",
                       metrics=metrics, plots=plots, config=config.to_dict())
        logger.info("best validation perplexity %.2f at step %s", metrics["validation"]["perplexity"],
                    metrics["best"]["step"])


def build_mlm_model(config: TrainConfig, tokenizer):
    """BertForMaskedLM: random of a size preset (--from_scratch) or from a checkpoint (continued pretraining)."""
    from transformers import AutoConfig, AutoModelForMaskedLM, BertForMaskedLM

    if config.from_scratch:
        return BertForMaskedLM(scratch_model_config("bert", config.from_scratch, len(tokenizer),
                                                    {"pad_token_id": tokenizer.pad_token_id}, config.max_length,
                                                    config.dropout))
    try:
        model_config = AutoConfig.from_pretrained(config.model_name_or_path, trust_remote_code=config.trust_remote_code)
        set_dropout(model_config, config.dropout, head=False)
        # A classifier checkpoint has no MLM head: it gets a fresh one (tied to the embeddings).
        return AutoModelForMaskedLM.from_pretrained(config.model_name_or_path, config=model_config,
                                                    trust_remote_code=config.trust_remote_code)
    except (OSError, ValueError) as err:
        raise UserError(f"cannot load {config.model_name_or_path!r} as a masked-LM model: {err}") from None


@dataclass
class MaskedLMLoss(ModelOutput):
    """The wrapper's output: `.loss` for the loop, the sum and count for an exact validation mean."""

    loss: torch.Tensor | None = None
    loss_sum: torch.Tensor | None = None
    tokens: torch.Tensor | None = None


class MaskedPositionsLM(torch.nn.Module):
    """A BertForMaskedLM that runs its prediction head only at the masked positions.

    The head's vocabulary projection is the largest matrix product of a small BERT; computing it for
    the 15% of positions that have a label, instead of all of them, saves a third of the work of a
    `mini` model with an 8,000-token vocabulary and gives the very same loss. Other architectures
    (no `.bert` / `.cls`) run their own full forward.
    """

    def __init__(self, model):
        super().__init__()
        self.mlm = model
        self.sparse = hasattr(model, "bert") and hasattr(model, "cls")

    def forward(self, input_ids, attention_mask, token_type_ids, labels):
        """Mean loss over the masked tokens, and their summed loss and count."""
        selected = labels != -100
        if self.sparse:
            hidden = self.mlm.bert(input_ids=input_ids, attention_mask=attention_mask,
                                   token_type_ids=token_type_ids).last_hidden_state
            logits = self.mlm.cls(hidden[selected])
        else:
            logits = self.mlm(input_ids=input_ids, attention_mask=attention_mask,
                              token_type_ids=token_type_ids).logits[selected]
        loss_sum = torch.nn.functional.cross_entropy(logits.float(), labels[selected], reduction="sum")
        tokens = selected.sum()
        return MaskedLMLoss(loss=loss_sum / tokens.clamp(min=1), loss_sum=loss_sum.detach(), tokens=tokens)

    def save_pretrained(self, directory, state_dict: dict, **kwargs) -> None:
        """The wrapped BertForMaskedLM as a standard model directory (the best weights, the model dir)."""
        weights = {name.removeprefix("mlm."): value for name, value in state_dict.items()}
        self.mlm.save_pretrained(directory, state_dict=weights, **kwargs)


def evaluate_mlm(model, dataloader, accelerator: Accelerator) -> dict:
    """Mean loss over every masked token of the validation set (all processes) and its perplexity."""
    model.eval()
    total_loss = torch.zeros((), device=accelerator.device, dtype=torch.float64)
    total_tokens = torch.zeros((), device=accelerator.device, dtype=torch.float64)
    for batch in dataloader:
        with torch.no_grad():
            output = model(**{k: batch[k] for k in MLM_INPUTS})
        total_loss += output["loss_sum"].double()
        total_tokens += output["tokens"].double()
    model.train()
    # Sums, not means of batch means, so every masked token weighs the same (the few sequences
    # Accelerate repeats to even out the last batch across processes count twice).
    total_loss = accelerator.reduce(total_loss, reduction="sum")
    total_tokens = accelerator.reduce(total_tokens, reduction="sum")
    loss = float(total_loss / total_tokens.clamp(min=1))
    return {"loss": loss, "perplexity": math.exp(min(loss, 50.0))}


def load_mlm_data(config: TrainConfig, accelerator: Accelerator):
    """Texts -> tokenizer -> packed (or truncated) sequences with word boundaries; plus data statistics."""
    normalization = NormalizationConfig(config.nfkc, config.remove_control, config.normalize_whitespace)
    with accelerator.main_process_first():
        texts = read_unlabeled_corpus(config.train_file, config.text_column, config.encoding, normalization)
        if config.validation_file:
            validation_texts = read_unlabeled_corpus(config.validation_file, config.text_column, config.encoding,
                                                    normalization, role="validation")
        else:
            texts, validation_texts = split_unlabeled(texts, config.validation_split, config.seed)
    # The model's position limit, not the pretraining --max_length: fine-tuning may use longer texts.
    tokenizer = load_run_tokenizer(config, accelerator, lambda: texts, max(512, config.max_length))
    if tokenizer.mask_token_id is None:
        raise UserError(f"the tokenizer of {config.tokenizer_name or config.model_name_or_path} has no mask token; "
                        "masked-LM training needs one")
    if tokenizer.cls_token_id is None or tokenizer.sep_token_id is None:  # packing frames sequences with them
        raise UserError(f"the tokenizer of {config.tokenizer_name or config.model_name_or_path} has no cls_token or "
                        "sep_token; set them in its tokenizer_config.json (RoBERTa-style: <s> and </s>)")
    train_sequences, truncated_train = build_sequences(tokenize_with_word_starts(texts, tokenizer), tokenizer,
                                                       config.max_length, config.mlm_pack)
    eval_sequences, truncated_eval = build_sequences(tokenize_with_word_starts(validation_texts, tokenizer),
                                                     tokenizer, config.max_length, config.mlm_pack)
    stats = {"train_texts": len(texts), "validation_texts": len(validation_texts),
             "train_sequences": len(train_sequences), "validation_sequences": len(eval_sequences),
             "train_tokens": sum(len(s["input_ids"]) for s in train_sequences),
             "truncated_texts": {"train": truncated_train, "validation": truncated_eval},
             "packed": config.mlm_pack}
    return tokenizer, train_sequences, eval_sequences, stats
