"""`--task mlm`: masked-LM pretraining of BERT on unlabeled text, on the same Accelerate machinery.

    unlabeled texts (.txt one per line, or any table with --text_column)
      -> tokenizer: the checkpoint's (continued pretraining) or WordPiece built from these texts (--from_scratch)
      -> sequences: packed to --max_length (or one text each, truncated) with MeCab word boundaries
      -> BertForMaskedLM trained with whole-word masking; validation perplexity = exp(masked-token loss)
      => MODEL DIR: save_pretrained model + tokenizer (+ jbert.json, metrics.json, card, plots) that
         `train.py --model_name_or_path DIR` fine-tunes with a fresh classification head

The launch modes (DDP, DeepSpeed ZeRO-2/3, FSDP), checkpoints (--checkpointing_steps, --resume auto),
the length-grouped sampler and the AdamW groups are the classification loop's own; the best model
is the one with the lowest validation loss. The optimisation loop below mirrors jbert.train.loop's:
they differ only in the evaluation and in what the model directory holds.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from pathlib import Path

import torch
import yaml
from accelerate import Accelerator
from accelerate.utils import DummyOptim, DummyScheduler, set_seed
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import get_scheduler

from jbert.core.artifacts import METRICS_FILE, TRAINING_CONFIG_FILE, JbertSettings, atomic_directory, check_output_dir
from jbert.core.errors import UserError
from jbert.core.normalize import NormalizationConfig
from jbert.data.unlabeled import read_unlabeled_texts, split_unlabeled
from jbert.train import checkpoint as ckpt
from jbert.train import launch as scaling
from jbert.train.config import TrainConfig
from jbert.train.loop import LengthGroupedSampler, _load_tokenizer, _parameter_groups, _setup_logging
from jbert.train.mlm_data import WholeWordMaskCollator, build_sequences, premask, tokenize_with_word_starts
from jbert.train.modeling import SIZE_PRESETS, _dropout_overrides

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
        """{"loss": mean over masked tokens, "loss_sum": their sum, "tokens": their count}."""
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
        return {"loss": loss_sum / tokens.clamp(min=1), "loss_sum": loss_sum.detach(), "tokens": tokens}


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


def _prepare_sequences(config: TrainConfig, accelerator: Accelerator):
    normalization = NormalizationConfig(config.nfkc, config.remove_control, config.normalize_whitespace)
    with accelerator.main_process_first():
        texts = read_unlabeled_texts(config.train_file, config.text_column, config.encoding, normalization)
        if config.validation_file:
            validation_texts = read_unlabeled_texts(config.validation_file, config.text_column, config.encoding,
                                                    normalization, role="validation")
        else:
            texts, validation_texts = split_unlabeled(texts, config.validation_split, config.seed)
    tokenizer = _load_tokenizer(config, accelerator, texts)
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


def train_mlm(config: TrainConfig) -> dict:
    """Masked-LM training on unlabeled text; writes the model directory and returns its metrics."""
    accelerator = Accelerator(
        gradient_accumulation_steps=config.gradient_accumulation_steps, mixed_precision=config.mixed_precision,
        log_with=config.report_to if config.with_tracking else None, project_dir=str(config.checkpoint_dir),
        **scaling.accelerator_init_kwargs(),
    )
    scaling.verify_process_group(accelerator)
    ds_config = scaling.prepare_deepspeed_config(accelerator, config)
    _setup_logging(accelerator)
    set_seed(config.seed, deterministic=config.full_determinism)
    if accelerator.is_main_process:
        check_output_dir(config.output_dir, config.overwrite_output_dir)
    checkpoint_root = config.checkpoint_dir

    tokenizer, train_sequences, eval_sequences, data_stats = _prepare_sequences(config, accelerator)
    world = accelerator.num_processes
    global_batch = config.per_device_train_batch_size * world
    if len(train_sequences) < global_batch:
        raise UserError(f"{len(train_sequences)} training sequences cannot fill one batch of "
                        f"{config.per_device_train_batch_size} on each of {world} processes; lower "
                        "--per_device_train_batch_size or --max_length, or give more text")
    pad_multiple = 8 if accelerator.mixed_precision != "no" else None
    collator = WholeWordMaskCollator(tokenizer, config.mlm_probability, pad_multiple, seed=config.seed)
    eval_set = premask(eval_sequences, collator, config.seed)
    model = MaskedPositionsLM(build_mlm_model(config, tokenizer))

    sampler = LengthGroupedSampler([len(s["input_ids"]) for s in train_sequences],
                                   global_batch * config.gradient_accumulation_steps, config.seed,
                                   config.group_by_length)
    train_dataloader = DataLoader(train_sequences, batch_size=config.per_device_train_batch_size, sampler=sampler,
                                  collate_fn=collator, num_workers=config.dataloader_num_workers,
                                  generator=torch.Generator().manual_seed(config.seed))
    eval_dataloader = DataLoader(eval_set, batch_size=config.per_device_eval_batch_size, collate_fn=collator)
    parameter_groups = _parameter_groups(model, config.weight_decay)
    if ds_config and "optimizer" in ds_config:
        optimizer = DummyOptim(parameter_groups, lr=config.learning_rate, weight_decay=config.weight_decay)
    else:
        optimizer = torch.optim.AdamW(parameter_groups, lr=config.learning_rate, eps=config.adam_epsilon)
    batches_per_epoch = math.ceil(len(train_sequences) / global_batch)
    steps_per_epoch = math.ceil(batches_per_epoch / config.gradient_accumulation_steps)
    max_steps = config.max_train_steps or math.ceil(config.num_train_epochs * steps_per_epoch)
    num_epochs = math.ceil(max_steps / steps_per_epoch)
    warmup = config.warmup_steps or math.ceil(config.warmup_ratio * max_steps)
    if ds_config and "scheduler" in ds_config:
        scheduler = DummyScheduler(optimizer, total_num_steps=max_steps * world, warmup_num_steps=warmup)
    else:
        scheduler = get_scheduler(config.lr_scheduler_type, optimizer, num_warmup_steps=warmup * world,
                                  num_training_steps=max_steps * world)
    model, optimizer, train_dataloader, eval_dataloader, scheduler = accelerator.prepare(
        model, optimizer, train_dataloader, eval_dataloader, scheduler)

    state = ckpt.TrainerState(world_size=world)
    resume_path = ckpt.resolve_resume_path(config.resume_from_checkpoint, checkpoint_root)
    if resume_path is not None:
        logger.info("resuming from %s", resume_path)
        state = ckpt.load_checkpoint(accelerator, resume_path)
    if config.with_tracking:
        accelerator.init_trackers("jbert-mlm", config={k: v for k, v in config.to_dict().items()
                                                       if isinstance(v, (int, float, str, bool))})
    best_dir = checkpoint_root / "best"
    logger.info("masked-LM: %d training sequences (%d texts), %d validation; %d steps over %d epoch(s)",
                len(train_sequences), data_stats["train_texts"], len(eval_set), max_steps, num_epochs)

    def run_evaluation() -> bool:
        results = evaluate_mlm(model, eval_dataloader, accelerator)
        record = {"step": state.global_step, "epoch": state.epoch + state.batches_in_epoch / batches_per_epoch,
                  "eval_loss": results["loss"], "eval_perplexity": results["perplexity"]}
        state.history.append(record)
        logger.info("step %d: eval_loss=%.4f, eval_perplexity=%.2f", state.global_step, results["loss"],
                    results["perplexity"])
        accelerator.log({"eval/loss": results["loss"], "eval/perplexity": results["perplexity"]},
                        step=state.global_step)
        if state.best_metric is None or results["loss"] < state.best_metric:
            state.best_metric, state.best_step = results["loss"], state.global_step
            state.evaluations_without_improvement = 0
            weights = accelerator.get_state_dict(model)  # every rank: gathers ZeRO-3 / FSDP shards
            if accelerator.is_main_process:
                shutil.rmtree(best_dir, ignore_errors=True)
                weights = {name.removeprefix("mlm."): value for name, value in weights.items()}
                accelerator.unwrap_model(model).mlm.save_pretrained(best_dir, state_dict=weights,
                                                                    safe_serialization=True)
            accelerator.wait_for_everyone()
        else:
            state.evaluations_without_improvement += 1
        patience = config.early_stopping_patience
        return patience is not None and state.evaluations_without_improvement >= patience

    progress = tqdm(total=max_steps, initial=state.global_step, desc="masked-LM",
                    disable=config.disable_tqdm or not accelerator.is_local_main_process)
    started = time.perf_counter()
    running_loss, running_batches = torch.zeros((), device=accelerator.device), 0
    stop = state.global_step >= max_steps
    if state.global_step == 0:
        run_evaluation()  # perplexity of the starting point: what the training improved on
    last_evaluated_step = state.history[-1]["step"] if state.history and "eval_loss" in state.history[-1] else -1
    checkpointing = config.checkpointing_steps
    model.train()
    while not stop and state.epoch < num_epochs:
        train_dataloader.set_epoch(state.epoch)
        collator.set_epoch(state.epoch)
        batches = (accelerator.skip_first_batches(train_dataloader, state.batches_in_epoch)
                   if state.batches_in_epoch else train_dataloader)
        for batch in batches:
            with accelerator.accumulate(model):
                loss = model(**batch)["loss"]
                accelerator.backward(loss)
                if accelerator.sync_gradients and config.max_grad_norm > 0:
                    accelerator.clip_grad_norm_(model.parameters(), config.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
            state.batches_in_epoch += 1
            state.train_samples_seen += batch["input_ids"].shape[0] * world
            running_loss += loss.detach().float()
            running_batches += 1
            if not accelerator.sync_gradients:
                continue
            state.global_step += 1
            progress.update(1)
            if state.global_step % config.logging_steps == 0 or state.global_step == max_steps:
                mean_loss = accelerator.reduce(running_loss / running_batches, reduction="mean").item()
                running_loss.zero_()
                running_batches = 0
                state.history.append({"step": state.global_step, "train_loss": mean_loss,
                                      "learning_rate": scheduler.get_last_lr()[0]})
                progress.set_postfix(loss=f"{mean_loss:.4f}")
                accelerator.log({"train/loss": mean_loss}, step=state.global_step)
            if config.eval_strategy == "steps" and state.global_step % config.eval_steps == 0:
                stop = run_evaluation()
                last_evaluated_step = state.global_step
            stop = stop or state.global_step >= max_steps
            epoch_done = state.batches_in_epoch >= len(train_dataloader)
            if epoch_done:
                state.epoch += 1
                state.batches_in_epoch = 0
                if config.eval_strategy == "epoch":
                    stop = run_evaluation() or stop
                    last_evaluated_step = state.global_step
            if checkpointing and ((checkpointing == "epoch" and epoch_done) or
                                  (checkpointing.isdigit() and state.global_step % int(checkpointing) == 0)):
                ckpt.save_checkpoint(accelerator, state, checkpoint_root, config.save_total_limit)
            if stop:
                break
    progress.close()
    train_seconds = time.perf_counter() - started
    if last_evaluated_step != state.global_step:
        run_evaluation()
    accelerator.wait_for_everyone()
    final = {}
    if accelerator.is_main_process:
        final = write_mlm_model_dir(config, tokenizer, state, data_stats, train_seconds)
        shutil.rmtree(best_dir, ignore_errors=True)
        shutil.rmtree(checkpoint_root / "tokenizer", ignore_errors=True)
        if checkpoint_root.is_dir() and not any(checkpoint_root.iterdir()):
            checkpoint_root.rmdir()
    accelerator.wait_for_everyone()
    accelerator.end_training()
    accelerator.state.destroy_process_group()
    return final


def write_mlm_model_dir(config: TrainConfig, tokenizer, state: ckpt.TrainerState, data_stats: dict,
                        train_seconds: float) -> dict:
    """The masked-LM model directory: weights of the best evaluation, tokenizer, metrics, card, plots."""
    from jbert.train.report import write_mlm_card, write_perplexity_plot

    best_dir = config.checkpoint_dir / "best"
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
