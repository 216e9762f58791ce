"""The training loop: one readable function on Accelerate, from data files to a model directory.

Same code for one CPU, multi-process CPU (gloo), multi-GPU, DeepSpeed, FSDP and multi-node: the
launch mode comes from `accelerate launch --config_file ...`, never from code changes here.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
from pathlib import Path

import numpy as np
import torch
import yaml
from accelerate import Accelerator
from accelerate.utils import DummyOptim, DummyScheduler, set_seed
from torch.utils.data import DataLoader, Sampler
from tqdm.auto import tqdm
from transformers import get_scheduler

from jbert.train import checkpoint as ckpt
from jbert.train import launch as scaling
from jbert.core.artifacts import EXAMPLES_FILE, METRICS_FILE, TRAINING_CONFIG_FILE, JbertSettings, atomic_directory, check_output_dir
from jbert.train.config import TrainConfig
from jbert.core.errors import UserError
from jbert.train.baseline import baseline_card_lines, baseline_for_data, compare_with_baseline
from jbert.train.metrics import ExtraMetrics, compute_metrics, resolve_best_metric
from jbert.core.postprocessing import predictions_from_logits, sigmoid
from jbert.train.modeling import build_scratch_model, load_pretrained_model
from jbert.train.report import write_model_card, write_plots
from jbert.core.normalize import NormalizationConfig

logger = logging.getLogger("jbert")

MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
CRASH_ENV = "JBERT_SIMULATE_CRASH_AFTER_STEP"  # tests: die right after this optimizer step's checkpoint


class SimulatedCrash(RuntimeError):
    """Raised by the test hook in CRASH_ENV to interrupt a run like a kill would."""


class LengthGroupedSampler(Sampler[int]):
    """A seeded shuffle per epoch; with grouping, mega-batches sorted by length (less padding).

    The order depends only on (seed, epoch) and the examples per optimizer step, so a resumed run
    sees the same batches as an uninterrupted one, and N processes with batch B/N see the same
    global batches as one process with batch B (Accelerate hands consecutive batches to the ranks).
    """

    def __init__(self, lengths: list[int], examples_per_step: int, seed: int, group_by_length: bool):
        self.lengths = np.asarray(lengths)
        self.examples_per_step = examples_per_step
        self.seed = seed
        self.group_by_length = group_by_length
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Called by Accelerate's dataloader at the start of every epoch."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        order = torch.randperm(len(self.lengths), generator=generator).numpy()
        if self.group_by_length:
            step = self.examples_per_step
            mega = step * 50
            grouped = []
            for start in range(0, len(order), mega):
                chunk = order[start : start + mega]
                # Stable sort keeps the shuffled order among equal lengths.
                chunk = chunk[np.argsort(-self.lengths[chunk], kind="stable")]
                steps = [chunk[i : i + step] for i in range(0, len(chunk), step)]
                # Visit the optimizer steps of a mega-batch in random order: sorted order alone would
                # feed the model long texts first and short ones last, a curriculum that hurts when
                # length correlates with the label. Whole steps move, so decompositions stay equal.
                full = [s for s in steps if len(s) == step]
                permutation = torch.randperm(len(full), generator=generator).tolist()
                grouped += [full[i] for i in permutation] + [s for s in steps if len(s) != step]
            order = np.concatenate(grouped)
        return iter(order.tolist())


class Collator:
    """Dynamic padding to the longest sequence of the batch (a multiple of 8 under mixed precision)."""

    def __init__(self, pad_token_id: int, pad_to_multiple_of: int | None, label_dtype: torch.dtype):
        self.pad_token_id = pad_token_id
        self.pad_to_multiple_of = pad_to_multiple_of
        self.label_dtype = label_dtype

    def __call__(self, examples: list[dict]) -> dict:
        longest = max(len(e["input_ids"]) for e in examples)
        if self.pad_to_multiple_of:
            longest = math.ceil(longest / self.pad_to_multiple_of) * self.pad_to_multiple_of
        batch = {}
        for name in MODEL_INPUTS:
            pad_value = self.pad_token_id if name == "input_ids" else 0
            array = np.full((len(examples), longest), pad_value, dtype=np.int64)
            for row, example in enumerate(examples):
                values = example[name]
                array[row, : len(values)] = values
            batch[name] = torch.from_numpy(array)
        if "labels" in examples[0]:
            batch["labels"] = torch.tensor([e["labels"] for e in examples], dtype=self.label_dtype)
        return batch


def _setup_logging(accelerator: Accelerator) -> None:
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S",
                        level=logging.INFO if accelerator.is_local_main_process else logging.WARNING)
    import datasets
    import transformers

    datasets.utils.logging.set_verbosity_warning()
    if accelerator.is_local_main_process:
        transformers.utils.logging.set_verbosity_warning()
    else:
        transformers.utils.logging.set_verbosity_error()
    datasets.disable_progress_bars()


def _load_tokenizer(config: TrainConfig, accelerator: Accelerator, train_texts: list[str]):
    """The pretrained tokenizer, or a WordPiece vocabulary trained on the training texts."""
    from jbert.tokenization import load_tokenizer, train_japanese_wordpiece

    if not config.from_scratch:
        with accelerator.main_process_first():
            return load_tokenizer(config.tokenizer_name or config.model_name_or_path, mecab_dic=config.mecab_dic,
                                  trust_remote_code=config.trust_remote_code)
    # Trained once by the main process into the checkpoint folder, so every rank and every resume
    # of this run uses the very same vocabulary.
    vocab_dir = config.checkpoint_dir / "tokenizer"
    with accelerator.main_process_first():
        if accelerator.is_main_process and not (vocab_dir / "vocab.txt").is_file():
            logger.info("training a %d-token WordPiece vocabulary on %d texts", config.vocab_size, len(train_texts))
            train_japanese_wordpiece(train_texts, config.vocab_size, vocab_dir,
                                     mecab_dic=config.mecab_dic or "unidic_lite",
                                     model_max_length=config.max_length)
        return load_tokenizer(str(vocab_dir), mecab_dic=config.mecab_dic)


def _parameter_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups: no weight decay on biases and LayerNorm weights."""
    decay, no_decay = [], []
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        (no_decay if name.endswith("bias") or "LayerNorm" in name or "layer_norm" in name else decay).append(parameter)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _loss_from_logits(logits: torch.Tensor, labels: torch.Tensor, problem_type: str) -> float:
    if problem_type == "single_label_classification":
        return float(torch.nn.functional.cross_entropy(logits, labels.long()))
    if problem_type == "multi_label_classification":
        return float(torch.nn.functional.binary_cross_entropy_with_logits(logits, labels.float()))
    return float(torch.nn.functional.mse_loss(logits.view(-1), labels.float().view(-1)))


def evaluate(model, dataloader, accelerator: Accelerator, problem_type: str, label_names: list[str],
             threshold: float, extra_metrics: ExtraMetrics | None = None) -> dict:
    """Loss and metrics over a whole (sharded) dataset, gathered without duplicates."""
    model.eval()
    all_logits, all_labels = [], []
    for batch in dataloader:
        with torch.no_grad():
            inputs = {k: batch[k] for k in MODEL_INPUTS}
            logits = model(**inputs).logits
        logits, labels = accelerator.gather_for_metrics((logits.float(), batch["labels"]))
        all_logits.append(logits.cpu())
        all_labels.append(labels.cpu())
    model.train()
    logits = torch.cat(all_logits)
    labels = torch.cat(all_labels)
    results = {"loss": _loss_from_logits(logits, labels, problem_type)}
    results.update(compute_metrics(logits.numpy(), labels.numpy(), problem_type, label_names, threshold))
    if extra_metrics and extra_metrics.metrics:
        predictions = predictions_from_logits(logits.numpy(), problem_type, threshold)
        results.update(extra_metrics.compute(predictions, labels.numpy()))
    return results


def _scalar_metrics(results: dict, prefix: str) -> dict:
    return {f"{prefix}{k}": v for k, v in results.items() if isinstance(v, (int, float))}


def train(config: TrainConfig, on_evaluate=None) -> dict:
    """Fine-tune (or train from scratch) and write the model directory; returns the final metrics.

    `on_evaluate(record)`, if given, sees every evaluation record (step, epoch, eval_* figures) as
    it is made; it may raise to abandon the run (the hyper-parameter search prunes trials so).
    """
    accelerator = Accelerator(
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        mixed_precision=config.mixed_precision,
        log_with=config.report_to if config.with_tracking else None,
        project_dir=str(config.checkpoint_dir),
        **scaling.accelerator_init_kwargs(),  # gloo on CPU-only machines (DDP and DeepSpeed alike)
    )
    scaling.verify_process_group(accelerator)
    ds_config = scaling.prepare_deepspeed_config(accelerator, config)  # None unless DeepSpeed
    _setup_logging(accelerator)
    logger.info("%s", accelerator.state)
    set_seed(config.seed, deterministic=config.full_determinism)
    if config.tf32 is not None and torch.cuda.is_available():
        torch.backends.cuda.matmul.allow_tf32 = config.tf32
        torch.backends.cudnn.allow_tf32 = config.tf32
    if accelerator.is_main_process:
        check_output_dir(config.output_dir, config.overwrite_output_dir)  # fail now, not after training
    checkpoint_root = config.checkpoint_dir

    from jbert.data.prepare import prepare_data, tokenize_dataset

    with accelerator.main_process_first():
        data = prepare_data(config)
    problem_type, label_names = data.problem_type, data.label_names
    # Checked as soon as the task is known (--task auto): a metric that doesn't fit fails before any work.
    best_metric, greater_is_better = resolve_best_metric(config.metric_for_best_model, problem_type)
    extra_metrics = ExtraMetrics(config.extra_metrics)
    has_pair = config.text_pair_column is not None
    train_texts = list(data.train["text"]) + (list(data.train["text_pair"]) if has_pair else [])
    tokenizer = _load_tokenizer(config, accelerator, train_texts)
    max_length = config.max_length
    model_limit = getattr(tokenizer, "model_max_length", None)
    if config.model_name_or_path and model_limit and model_limit < 100_000 and max_length > model_limit:
        raise UserError(f"--max_length {max_length} exceeds the model's maximum of {model_limit} tokens")

    with accelerator.main_process_first():
        train_set, truncated_train = tokenize_dataset(data.train, tokenizer, max_length, has_pair)
        eval_set, truncated_eval = tokenize_dataset(data.validation, tokenizer, max_length, has_pair)
    if truncated_train or truncated_eval:
        logger.warning("truncated to %d tokens: %d training and %d validation texts", max_length,
                       truncated_train, truncated_eval)

    if config.from_scratch:
        model = build_scratch_model(config.from_scratch, len(tokenizer), tokenizer.pad_token_id, max_length,
                                    label_names, problem_type, config.dropout)
    else:
        with accelerator.main_process_first():
            model = load_pretrained_model(config.model_name_or_path, label_names, problem_type, config.dropout,
                                          config.trust_remote_code)

    world = accelerator.num_processes
    global_batch = config.per_device_train_batch_size * world
    if len(train_set) < global_batch:
        raise UserError(
            f"{len(train_set)} training examples cannot fill one batch of {config.per_device_train_batch_size} "
            f"on each of {world} processes; lower --per_device_train_batch_size or use fewer processes"
        )
    label_dtype = torch.long if problem_type == "single_label_classification" else torch.float
    pad_multiple = 8 if accelerator.mixed_precision != "no" else None
    collator = Collator(tokenizer.pad_token_id, pad_multiple, label_dtype)
    columns = list(MODEL_INPUTS) + ["labels"]
    train_set = train_set.with_format(columns=columns)
    eval_set = eval_set.with_format(columns=columns)
    # Grouping by the examples of one optimizer step keeps the data order identical whether a step
    # is made of 1 x 16, 2 processes x 8, or 2 accumulated micro-batches of 8.
    sampler = LengthGroupedSampler([len(ids) for ids in train_set["input_ids"]],
                                   global_batch * config.gradient_accumulation_steps, config.seed,
                                   config.group_by_length)
    # Own generator: iterating a DataLoader must not draw from the global RNG that dropout uses,
    # or a resumed run would see different dropout masks than an uninterrupted one.
    train_dataloader = DataLoader(train_set, batch_size=config.per_device_train_batch_size, sampler=sampler,
                                  collate_fn=collator, num_workers=config.dataloader_num_workers,
                                  generator=torch.Generator().manual_seed(config.seed))
    eval_dataloader = DataLoader(eval_set, batch_size=config.per_device_eval_batch_size, collate_fn=collator,
                                 num_workers=config.dataloader_num_workers)

    parameter_groups = _parameter_groups(model, config.weight_decay)
    if ds_config and "optimizer" in ds_config:
        # The DeepSpeed JSON builds the optimizer; its "auto" lr/weight decay come from our flags.
        optimizer = DummyOptim(parameter_groups, lr=config.learning_rate, weight_decay=config.weight_decay)
    else:
        optimizer = torch.optim.AdamW(parameter_groups, lr=config.learning_rate, eps=config.adam_epsilon)
    batches_per_epoch = math.ceil(len(train_set) / global_batch)
    steps_per_epoch = math.ceil(batches_per_epoch / config.gradient_accumulation_steps)
    max_steps = config.max_train_steps or math.ceil(config.num_train_epochs * steps_per_epoch)
    num_epochs = math.ceil(max_steps / steps_per_epoch)
    warmup = config.warmup_steps or math.ceil(config.warmup_ratio * max_steps)
    # Accelerate steps a prepared scheduler once per process per optimizer step, hence the factor.
    if ds_config and "scheduler" in ds_config:
        # DeepSpeed steps its own scheduler once per optimizer step; Accelerate divides the total by
        # the process count (it expects the same x world convention), warm-up it takes as given.
        scheduler = DummyScheduler(optimizer, total_num_steps=max_steps * world, warmup_num_steps=warmup)
    else:
        scheduler = get_scheduler(config.lr_scheduler_type, optimizer, num_warmup_steps=warmup * world,
                                  num_training_steps=max_steps * world)
    model, optimizer, train_dataloader, eval_dataloader, scheduler = accelerator.prepare(
        model, optimizer, train_dataloader, eval_dataloader, scheduler
    )

    state = ckpt.TrainerState(world_size=world)
    resume_path = ckpt.resolve_resume_path(config.resume_from_checkpoint, checkpoint_root)
    if resume_path is not None:
        logger.info("resuming from %s", resume_path)
        state = ckpt.load_checkpoint(accelerator, resume_path)
    elif config.resume_from_checkpoint == "auto":
        logger.info("no checkpoint in %s: starting from scratch", checkpoint_root)

    if config.with_tracking:
        accelerator.init_trackers("jbert", config={k: v for k, v in config.to_dict().items()
                                                   if isinstance(v, (int, float, str, bool))})
    checkpointing = config.checkpointing_steps
    crash_after = int(os.environ.get(CRASH_ENV, "0"))
    best_dir = checkpoint_root / "best"
    logger.info("%d training examples, %d validation; %d process(es) x batch %d x accumulation %d = %d per step; "
                "%d steps over %d epoch(s)", len(train_set), len(eval_set), world,
                config.per_device_train_batch_size, config.gradient_accumulation_steps,
                global_batch * config.gradient_accumulation_steps, max_steps, num_epochs)

    def run_evaluation() -> bool:
        """Evaluate, record history, keep the best weights; returns True when training should stop."""
        results = evaluate(model, eval_dataloader, accelerator, problem_type, label_names,
                           config.multi_label_threshold, extra_metrics)
        record = {"step": state.global_step, "epoch": state.epoch + state.batches_in_epoch / batches_per_epoch}
        record.update(_scalar_metrics(results, "eval_"))
        for key in ("per_class", "confusion_matrix"):
            if key in results:
                record[f"eval_{key}"] = results[key]
        state.history.append(record)
        if on_evaluate is not None:
            on_evaluate(record)
        value = results[best_metric]
        improved = state.best_metric is None or (value > state.best_metric if greater_is_better else value < state.best_metric)
        logger.info("step %d: %s", state.global_step,
                    ", ".join(f"{k}={v:.4f}" for k, v in record.items()
                              if k.startswith("eval_") and isinstance(v, float)))
        accelerator.log(_scalar_metrics(results, "eval/"), step=state.global_step)
        if improved:
            state.best_metric, state.best_step = value, state.global_step
            state.evaluations_without_improvement = 0
            weights = accelerator.get_state_dict(model)  # gathers ZeRO-3 / FSDP shards; call on every rank
            if accelerator.is_main_process:
                shutil.rmtree(best_dir, ignore_errors=True)
                accelerator.unwrap_model(model).save_pretrained(best_dir, state_dict=weights,
                                                                safe_serialization=True)
            accelerator.wait_for_everyone()
        else:
            state.evaluations_without_improvement += 1
        patience = config.early_stopping_patience
        return patience is not None and state.evaluations_without_improvement >= patience

    progress = tqdm(total=max_steps, initial=state.global_step, desc="training",
                    disable=config.disable_tqdm or not accelerator.is_local_main_process)
    started = time.perf_counter()
    samples_at_start = state.train_samples_seen
    running_loss, running_batches = torch.zeros((), device=accelerator.device), 0
    stop = state.global_step >= max_steps
    last_evaluated_step = state.history[-1]["step"] if state.history else -1
    model.train()
    while not stop and state.epoch < num_epochs:
        train_dataloader.set_epoch(state.epoch)
        if state.batches_in_epoch:
            batches = accelerator.skip_first_batches(train_dataloader, state.batches_in_epoch)
        else:
            batches = train_dataloader
        for batch in batches:
            with accelerator.accumulate(model):
                loss = model(**batch).loss
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
                accelerator.log({"train/loss": mean_loss, "train/learning_rate": scheduler.get_last_lr()[0]},
                                step=state.global_step)
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
            if checkpointing and (
                (checkpointing == "epoch" and epoch_done) or
                (checkpointing.isdigit() and state.global_step % int(checkpointing) == 0)
            ):
                ckpt.save_checkpoint(accelerator, state, checkpoint_root, config.save_total_limit)
            if crash_after and state.global_step == crash_after:
                raise SimulatedCrash(f"simulated crash after step {crash_after}")
            if stop:
                break
    progress.close()
    train_seconds = time.perf_counter() - started
    if last_evaluated_step != state.global_step:
        run_evaluation()
    accelerator.wait_for_everyone()
    final = {}
    if accelerator.is_main_process:
        final = _write_model_dir(config, data, tokenizer, state, best_metric, problem_type, label_names,
                                 accelerator.device, truncated={"train": truncated_train, "validation": truncated_eval},
                                 throughput={"train_seconds": train_seconds,
                                             "train_samples_per_second": (state.train_samples_seen - samples_at_start) / max(train_seconds, 1e-9)})
        # The model directory is complete: the run's working files are no longer needed.
        shutil.rmtree(best_dir, ignore_errors=True)
        shutil.rmtree(checkpoint_root / "tokenizer", ignore_errors=True)
        if checkpoint_root.is_dir() and not any(checkpoint_root.iterdir()):
            checkpoint_root.rmdir()
    accelerator.wait_for_everyone()
    accelerator.end_training()
    # Tear the process group down before the interpreter exits: left to atexit, gloo's threads can
    # abort a finished rank ("terminate called without an active exception", exit -6).
    accelerator.state.destroy_process_group()
    return final


def _predict(model, tokenizer, texts: list[str], pairs: list[str] | None, max_length: int, batch_size: int,
             device) -> np.ndarray:
    """Logits for texts in order, batched by length (used on the saved model for the test file)."""
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]) + (len(pairs[i]) if pairs else 0))
    logits = [None] * len(texts)
    model.eval()
    for start in range(0, len(order), batch_size):
        ids = order[start : start + batch_size]
        encoded = tokenizer([texts[i] for i in ids], [pairs[i] for i in ids] if pairs else None, truncation=True,
                            max_length=max_length, padding=True, return_tensors="pt")
        with torch.no_grad():
            batch_logits = model(**{k: v.to(device) for k, v in encoded.items() if k in MODEL_INPUTS}).logits
        for row, i in enumerate(ids):
            logits[i] = batch_logits[row].float().cpu().numpy()
    return np.stack(logits)


def _write_model_dir(config: TrainConfig, data, tokenizer, state: ckpt.TrainerState, best_metric: str,
                     problem_type: str, label_names: list[str], device, truncated: dict, throughput: dict) -> dict:
    """Assemble the model directory in a temporary place and move it into `output_dir` when complete."""
    from transformers import AutoModelForSequenceClassification

    best_dir = config.checkpoint_dir / "best"
    has_pair = config.text_pair_column is not None
    settings = JbertSettings(
        normalization=NormalizationConfig(config.nfkc, config.remove_control, config.normalize_whitespace),
        max_length=config.max_length, problem_type=problem_type, text_column=config.text_column,
        text_pair_column=config.text_pair_column, multi_label_threshold=config.multi_label_threshold,
    )
    with atomic_directory(config.output_dir, overwrite=config.overwrite_output_dir) as tmp:
        for name in os.listdir(best_dir):
            shutil.copy2(best_dir / name, tmp / name)
        tokenizer.save_pretrained(tmp)
        settings.save(tmp)
        with open(tmp / TRAINING_CONFIG_FILE, "w", encoding="utf-8") as handle:
            yaml.safe_dump(config.to_dict(), handle, allow_unicode=True, sort_keys=False)

        def label_value(raw):
            if problem_type == "single_label_classification":
                return label_names[int(raw)]
            if problem_type == "multi_label_classification":
                return [name for name, on in zip(label_names, raw) if on > 0.5]
            return float(raw)

        with open(tmp / EXAMPLES_FILE, "w", encoding="utf-8") as handle:
            for row in data.validation.select(range(min(32, len(data.validation)))):
                example = {"text": row["text"], "label": label_value(row["labels"])}
                if has_pair:
                    example["text_pair"] = row["text_pair"]
                handle.write(json.dumps(example, ensure_ascii=False) + "\n")

        best_record = next(h for h in state.history if h["step"] == state.best_step and f"eval_{best_metric}" in h)
        validation_metrics = {k.removeprefix("eval_"): v for k, v in best_record.items() if k.startswith("eval_")}
        test_metrics = None
        confusion = validation_metrics.get("confusion_matrix")
        if data.test is not None and len(data.test):
            model = AutoModelForSequenceClassification.from_pretrained(tmp).to(device)
            texts = list(data.test["text"])
            pairs = list(data.test["text_pair"]) if has_pair else None
            logits = _predict(model, tokenizer, texts, pairs, config.max_length, config.per_device_eval_batch_size,
                              device)
            predictions = predictions_from_logits(logits, problem_type, config.multi_label_threshold)
            with open(tmp / "predictions_test.jsonl", "w", encoding="utf-8") as handle:
                for i, text in enumerate(texts):
                    row = {"text": text}
                    if has_pair:
                        row["text_pair"] = pairs[i]
                    if "labels" in data.test.column_names:
                        row["label"] = label_value(data.test[i]["labels"])
                    if problem_type == "single_label_classification":
                        probabilities = np.exp(logits[i] - logits[i].max())
                        probabilities /= probabilities.sum()
                        row["prediction"] = label_names[int(predictions[i])]
                        row["score"] = float(probabilities.max())
                    elif problem_type == "multi_label_classification":
                        row["prediction"] = [n for n, on in zip(label_names, predictions[i]) if on]
                        row["scores"] = dict(zip(label_names, sigmoid(logits[i]).round(6).tolist()))
                    else:
                        row["prediction"] = float(predictions[i])
                    handle.write(json.dumps(row, ensure_ascii=False) + "\n")
            if "labels" in data.test.column_names:
                labels = np.asarray(data.test["labels"])
                test_metrics = compute_metrics(logits, labels, problem_type, label_names,
                                               config.multi_label_threshold)
                confusion = test_metrics.get("confusion_matrix", confusion)
        data_summary = {
            "train_file": config.train_file, "validation_file": config.validation_file or
            f"{config.validation_split:.0%} stratified split of the training file", "test_file": config.test_file,
            "examples": {"train": len(data.train), "validation": len(data.validation),
                         "test": len(data.test) if data.test is not None else 0},
            "truncated_to_max_length": truncated, "stats": data.stats,
        }
        baseline = None
        if config.baseline != "none":
            baseline = baseline_for_data(data, problem_type, label_names, config.multi_label_threshold, config.seed)
        comparison = compare_with_baseline(state.best_metric, baseline, best_metric,
                                           resolve_best_metric(best_metric, problem_type)[1])
        plots = write_plots(tmp, state.history, best_metric, confusion, label_names)
        metrics = {
            "problem_type": problem_type, "labels": label_names, "best_metric": best_metric,
            "best": {"step": state.best_step, "metric": best_metric, "value": state.best_metric},
            "validation": validation_metrics, "test": test_metrics, "history": state.history,
            "data": data_summary, "global_step": state.global_step, **throughput,
        }
        if baseline is not None:
            metrics["baseline"] = {**baseline, "comparison": comparison}
        with open(tmp / METRICS_FILE, "w", encoding="utf-8") as handle:
            json.dump(metrics, handle, ensure_ascii=False, indent=2)
        write_model_card(tmp, name=Path(config.output_dir).name, model_source=config.model_name_or_path or f"scratch ({config.from_scratch} BERT)",
                         settings=settings, label_names=label_names, data_summary=data_summary,
                         validation_metrics=validation_metrics, test_metrics=test_metrics,
                         best=metrics["best"], plots=plots, config=config.to_dict(),
                         extra_sections=baseline_card_lines(baseline, comparison, validation_metrics, test_metrics))
    logger.info("model written to %s (best %s %.4f at step %s)", config.output_dir, best_metric,
                state.best_metric, state.best_step)
    if comparison is not None:
        logger.info("validation %s: model %.4f, baseline %.4f%s", best_metric, comparison["model"],
                    comparison["baseline"], "" if not test_metrics or best_metric not in test_metrics else
                    f"; test {best_metric}: model {test_metrics[best_metric]:.4f}, baseline "
                    f"{baseline['test'][best_metric]:.4f}")
        if comparison["warning"]:
            logger.warning("%s", comparison["warning"])
    return metrics

