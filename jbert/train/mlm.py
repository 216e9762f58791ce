"""`--task mlm`: masked-LM pretraining of BERT on unlabeled text, on the same Accelerate machinery.

    unlabeled texts (.txt one per line, or any table with --text_column)
      -> tokenizer: the checkpoint's (continued pretraining) or WordPiece built from these texts (--from_scratch)
      -> sequences: packed to --max_length (or one text each, truncated) with MeCab word boundaries
      -> BertForMaskedLM trained with whole-word masking; validation perplexity = exp(masked-token loss)
      => MODEL DIR: save_pretrained model + tokenizer (+ jbert.json, metrics.json, card, plots) that
         `train.py --model_name_or_path DIR` fine-tunes with a fresh classification head

The loop is the classification loop's own (jbert.train.loop: set_up, start_or_resume, train_loop), so
the launch modes (DDP, DeepSpeed ZeRO-2/3, FSDP), checkpoints (--checkpointing_steps, --resume auto),
the length-grouped sampler, AdamW and the schedule are the same; only the data, the model, the
evaluation (perplexity; the best model has the lowest validation loss) and the directory differ.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml
from accelerate import Accelerator
from torch.utils.data import DataLoader
from transformers.utils import ModelOutput

from jbert.core.artifacts import METRICS_FILE, TRAINING_CONFIG_FILE, JbertSettings, atomic_directory
from jbert.core.errors import UserError
from jbert.core.normalize import NormalizationConfig
from jbert.data.unlabeled import read_unlabeled_corpus, split_unlabeled
from jbert.train import checkpoint as ckpt
from jbert.train.batching import LengthGroupedSampler
from jbert.train.config import TrainConfig
from jbert.train.loop import Run, load_run_tokenizer, set_up, start_or_resume, train_loop
from jbert.train.mlm_data import WholeWordMaskCollator, build_sequences, premask, tokenize_with_word_starts
from jbert.train.model_dir import remove_working_files
from jbert.train.modeling import SIZE_PRESETS, _dropout_overrides
from jbert.train.optimization import Schedule, build_lr_scheduler, build_optimizer

logger = logging.getLogger("jbert")

MLM_INPUTS = ("input_ids", "attention_mask", "token_type_ids", "labels")


def build_mlm_model(config: TrainConfig, tokenizer):
    """BertForMaskedLM: random of a size preset (--from_scratch) or from a checkpoint (continued pretraining)."""
    from transformers import AutoConfig, AutoModelForMaskedLM, BertConfig, BertForMaskedLM

    if config.from_scratch:
        model_config = BertConfig(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
                                  max_position_embeddings=max(512, config.max_length),
                                  **SIZE_PRESETS[config.from_scratch], **_dropout_overrides(config.dropout))
        return BertForMaskedLM(model_config)
    overrides = {k: v for k, v in _dropout_overrides(config.dropout).items() if k != "classifier_dropout"}
    try:
        model_config = AutoConfig.from_pretrained(config.model_name_or_path, trust_remote_code=config.trust_remote_code,
                                                  **overrides)
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
    return {"loss": loss, "perplexity": math.exp(min(loss, 50.0)), "masked_tokens": int(total_tokens)}


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


class MLMEvaluator:
    """The loop's evaluator for masked-LM: validation loss and perplexity, best weights, early stopping.

    The same interface as jbert.train.evaluation.Evaluator (call it with the state; `best_metric`,
    `last_value`, `has_evaluated`); the best model is the one with the lowest validation loss.
    """

    best_metric = "perplexity"

    def __init__(self, accelerator: Accelerator, model, dataloader, best_dir: Path, batches_per_epoch: int,
                 patience: int | None):
        self.accelerator, self.model, self.dataloader = accelerator, model, dataloader
        self.best_dir, self.batches_per_epoch, self.patience = best_dir, batches_per_epoch, patience
        self.last_value: float | None = None

    def __call__(self, state: ckpt.TrainerState) -> bool:
        """Evaluate at the state's step; returns True when early stopping should end the run."""
        results = evaluate_mlm(self.model, self.dataloader, self.accelerator)
        record = {"step": state.global_step, "epoch": state.epoch + state.batches_in_epoch / self.batches_per_epoch,
                  "eval_loss": results["loss"], "eval_perplexity": results["perplexity"]}
        state.history.append(record)
        self.last_value = results["perplexity"]
        logger.info("step %d: eval_loss=%.4f, eval_perplexity=%.2f", state.global_step, results["loss"],
                    results["perplexity"])
        self.accelerator.log({"eval/loss": results["loss"], "eval/perplexity": results["perplexity"]},
                             step=state.global_step)
        if state.best_metric is None or results["loss"] < state.best_metric:
            state.best_metric, state.best_step = results["loss"], state.global_step
            state.evaluations_without_improvement = 0
            self._save_best()
        else:
            state.evaluations_without_improvement += 1
        return self.patience is not None and state.evaluations_without_improvement >= self.patience

    def has_evaluated(self, state: ckpt.TrainerState) -> bool:
        """True when the history already holds an evaluation at the state's current step."""
        return any(r["step"] == state.global_step and "eval_loss" in r for r in state.history)

    def _save_best(self) -> None:
        weights = self.accelerator.get_state_dict(self.model)  # every rank: gathers ZeRO-3 / FSDP shards
        if self.accelerator.is_main_process:
            weights = {name.removeprefix("mlm."): value for name, value in weights.items()}
            # Replaced whole, as the classification evaluator does: a kill or a full disk mid-write
            # leaves the previous best weights, never none or a torn file.
            with atomic_directory(self.best_dir, overwrite=True) as work_dir:
                self.accelerator.unwrap_model(self.model).mlm.save_pretrained(work_dir, state_dict=weights,
                                                                              safe_serialization=True)
        self.accelerator.wait_for_everyone()


def train_mlm(config: TrainConfig, on_step_end=None) -> dict:
    """Masked-LM training on unlabeled text; writes the model directory and returns its metrics.

    The stages of jbert.train.loop.train with masked-LM data, model and evaluation: `set_up`,
    `start_or_resume` and `train_loop` are the classification loop's own. `on_step_end` as there.
    """
    accelerator, ds_config = set_up(config)
    tokenizer, train_sequences, eval_sequences, data_stats = load_mlm_data(config, accelerator)
    world = accelerator.num_processes
    schedule = Schedule.plan(config, len(train_sequences), world)
    sampler = LengthGroupedSampler([len(s["input_ids"]) for s in train_sequences], schedule.examples_per_step,
                                   config.seed, config.group_by_length)
    pad_multiple = 8 if accelerator.mixed_precision != "no" else None
    collator = WholeWordMaskCollator(tokenizer, config.mlm_probability, pad_multiple, seed=config.seed, sampler=sampler)
    eval_set = premask(eval_sequences, collator, config.seed)
    model = MaskedPositionsLM(build_mlm_model(config, tokenizer))
    # Own generator: iterating must not draw from the global RNG that dropout uses (exact resume).
    train_dataloader = DataLoader(train_sequences, batch_size=config.per_device_train_batch_size, sampler=sampler,
                                  collate_fn=collator, num_workers=config.dataloader_num_workers,
                                  generator=torch.Generator().manual_seed(config.seed))
    eval_dataloader = DataLoader(eval_set, batch_size=config.per_device_eval_batch_size, collate_fn=collator)
    optimizer = build_optimizer(model, config, ds_config)
    scheduler = build_lr_scheduler(optimizer, config, ds_config, schedule, world)
    model, optimizer, train_dataloader, eval_dataloader, scheduler = accelerator.prepare(
        model, optimizer, train_dataloader, eval_dataloader, scheduler)
    evaluator = MLMEvaluator(accelerator, model, eval_dataloader, config.checkpoint_dir / ckpt.BEST_DIR,
                             schedule.batches_per_epoch, config.early_stopping_patience)
    run = Run(model, optimizer, scheduler, train_dataloader, eval_dataloader, schedule, evaluator)
    logger.info("masked-LM: %d training sequences (%d texts), %d validation; %d steps over %d epoch(s)",
                len(train_sequences), data_stats["train_texts"], len(eval_set), schedule.max_steps, schedule.num_epochs)
    state = start_or_resume(config, accelerator)
    if state.global_step == 0:
        evaluator(state)  # perplexity of the starting point: what the training improved on
    throughput = train_loop(config, accelerator, run, state, on_step_end)
    if not evaluator.has_evaluated(state):
        evaluator(state)
    accelerator.wait_for_everyone()
    final = {}
    if accelerator.is_main_process:
        final = write_mlm_model_dir(config, tokenizer, state, data_stats, throughput["train_seconds"])
        remove_working_files(config.checkpoint_dir)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    accelerator.state.destroy_process_group()  # as the classification loop: no gloo threads left to atexit
    return final


def write_mlm_model_dir(config: TrainConfig, tokenizer, state: ckpt.TrainerState, data_stats: dict,
                        train_seconds: float) -> dict:
    """The masked-LM model directory: weights of the best evaluation, tokenizer, metrics, card, plots."""
    from jbert.train.report import write_mlm_card, write_perplexity_plot

    best_dir = config.checkpoint_dir / ckpt.BEST_DIR
    settings = JbertSettings(
        normalization=NormalizationConfig(config.nfkc, config.remove_control, config.normalize_whitespace),
        max_length=config.max_length, text_column=config.text_column,
    )
    best_record = next(h for h in state.history if h["step"] == state.best_step and "eval_loss" in h)
    first_record = next(h for h in state.history if "eval_loss" in h)
    metrics = {
        "task": "mlm", "best": {"step": state.best_step, "metric": "loss", "value": state.best_metric},
        "validation": {"loss": best_record["eval_loss"], "perplexity": best_record["eval_perplexity"]},
        "first_evaluation": {"step": first_record["step"], "perplexity": first_record["eval_perplexity"]},
        "history": state.history, "data": {"train_file": config.train_file,
                                           "validation_file": config.validation_file, **data_stats},
        "global_step": state.global_step, "train_seconds": train_seconds,
    }
    with atomic_directory(config.output_dir, overwrite=config.overwrite_output_dir) as tmp:
        for name in best_dir.iterdir():
            shutil.copy2(name, tmp / name.name)
        tokenizer.save_pretrained(tmp)
        settings.save(tmp)
        with open(tmp / TRAINING_CONFIG_FILE, "w", encoding="utf-8") as handle:
            yaml.safe_dump(config.to_dict(), handle, allow_unicode=True, sort_keys=False)
        with open(tmp / METRICS_FILE, "w", encoding="utf-8") as handle:
            json.dump(metrics, handle, ensure_ascii=False, indent=2)
        plots = write_perplexity_plot(tmp, state.history)
        write_mlm_card(tmp, name=Path(config.output_dir).name,
                       model_source=config.model_name_or_path or f"scratch ({config.from_scratch} BERT)",
                       metrics=metrics, plots=plots, config=config.to_dict())
    logger.info("masked-LM model written to %s (best validation perplexity %.2f at step %s)", config.output_dir,
                best_record["eval_perplexity"], state.best_step)
    return metrics
