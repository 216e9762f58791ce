"""The training loop on Accelerate, from data files to a model directory: `train(config)`.

`train` is five stages, read top to bottom (each a function of this module):

    set up       set_up: the Accelerator (launch mode from `accelerate launch`), logging, seeds
    load data    load_data: prepare_data, the tokenizer, tokenize_dataset (main process first)
    build model  build_model, prepare_run: the model; batches, AdamW, schedule; `accelerator.prepare`
    loop         start_or_resume, train_loop: `accumulate` / backward / step; log, evaluate, checkpoint
    finish       finish: a last evaluation, the model directory (jbert.train.model_dir), clean-up

Same code for one CPU, multi-process CPU (gloo), multi-GPU, DeepSpeed, FSDP and multi-node: the
launch mode comes from `accelerate launch --config_file ...`, never from code changes here.
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass
from typing import Callable, Optional

import datasets
import torch
from accelerate import Accelerator
from accelerate.utils import set_seed

from jbert.core.artifacts import atomic_directory, check_output_dir
from jbert.core.errors import UserError
from jbert.core.progress import Progress, stream_is_terminal
from jbert.data import PreparedData, prepare_data, tokenize_dataset
from jbert.train import checkpoint as ckpt
from jbert.train import launch as scaling
# MODEL_INPUTS, Collator, LengthGroupedSampler and evaluate stay importable from here (and from the
# old name jbert.training) as they were before the loop was split up.
from jbert.train.batching import MODEL_INPUTS, Collator, LengthGroupedSampler, training_dataloaders
from jbert.train.config import TrainConfig
from jbert.train.deepspeed_config import prepare_deepspeed_config
from jbert.train.evaluation import Evaluator, evaluate
from jbert.train.metrics import ExtraMetrics, resolve_best_metric
from jbert.train.model_dir import remove_working_files, write_model_dir
from jbert.train.modeling import build_scratch_model, load_pretrained_model
from jbert.train.optimization import Schedule, build_lr_scheduler, build_optimizer

__all__ = ["StepCallback", "train", "MODEL_INPUTS", "Collator", "LengthGroupedSampler", "evaluate"]

logger = logging.getLogger("jbert")

StepCallback = Callable[[int, Accelerator], None]
"""on_step_end(global_step, accelerator): see `train`."""


@dataclass
class TrainingData:
    """What the load-data stage hands on."""

    prepared: PreparedData  # cleaned, labelled, split texts (the model directory's report uses them)
    tokenizer: object
    train_set: datasets.Dataset  # tokenized, unpadded
    eval_set: datasets.Dataset
    truncated: dict  # {"train": n, "validation": n} texts cut to max_length
    best_metric: str  # the selection metric, resolved for the detected task
    greater_is_better: bool
    extra_metrics: ExtraMetrics


@dataclass
class Run:
    """What `accelerator.prepare` returned, the schedule the loop follows, and its evaluator."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: object
    train_dataloader: object
    eval_dataloader: object
    schedule: Schedule
    evaluator: Evaluator


def train(config: TrainConfig, on_step_end: Optional[StepCallback] = None,
          on_evaluate: Optional[Callable[[dict], None]] = None) -> dict:
    """Fine-tune (or train from scratch) and write the model directory; returns the final metrics.

    on_step_end: called as `on_step_end(global_step, accelerator)` on every process after each
    optimizer step, once that step's logging, evaluation and checkpoint are done. For monitoring,
    and for tests that stop a run at a known step: an exception raised there ends the run as a
    crash would (no model directory; checkpoints stay for --resume_from_checkpoint).
    on_evaluate: called as `on_evaluate(record)` with every evaluation record (step, epoch, eval_*
    figures) as it is made; it may raise to abandon the run (--hp_search prunes trials so).
    """
    accelerator, ds_config = set_up(config)
    # A process of the run that dies or hangs makes the others' collectives fail: one message, not a
    # backend traceback per rank (and no abort in gloo's threads at exit).
    with scaling.collective_failures_explained(config.collective_timeout_seconds):
        data = load_data(config, accelerator)
        model = build_model(config, accelerator, data)
        run = prepare_run(config, accelerator, ds_config, model, data)
        run.evaluator.on_evaluate = on_evaluate
        state = start_or_resume(config, accelerator)
        throughput = train_loop(config, accelerator, run, state, on_step_end)
        return finish(config, accelerator, data, run, state, throughput)


# ------------------------------------------------------------------ set up


def set_up(config: TrainConfig) -> tuple[Accelerator, Optional[dict]]:
    """The Accelerator of this launch, logging and seeds; a taken output_dir fails now, not after training."""
    accelerator = Accelerator(
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        mixed_precision=config.mixed_precision,
        log_with=config.report_to if config.with_tracking else None,
        project_dir=str(config.checkpoint_dir),
        # gloo on CPU-only machines (DDP and DeepSpeed alike); the collective timeout chosen, not inherited
        **scaling.accelerator_init_kwargs(config.collective_timeout_seconds),
    )
    scaling.verify_process_group(accelerator)
    ds_config = prepare_deepspeed_config(accelerator, config)  # None unless DeepSpeed
    _set_up_logging(accelerator, config)
    logger.info("%s", accelerator.state)
    set_seed(config.seed, deterministic=config.full_determinism)
    if config.tf32 is not None and torch.cuda.is_available():
        torch.backends.cuda.matmul.allow_tf32 = config.tf32
        torch.backends.cudnn.allow_tf32 = config.tf32
    if accelerator.is_main_process:
        check_output_dir(config.output_dir, config.overwrite_output_dir)
    return accelerator, ds_config


def _set_up_logging(accelerator: Accelerator, config: TrainConfig) -> None:
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S",
                        level=logging.INFO if accelerator.is_local_main_process else logging.WARNING)
    import huggingface_hub
    import transformers

    datasets.utils.logging.set_verbosity_warning()
    if accelerator.is_local_main_process:
        transformers.utils.logging.set_verbosity_warning()
    else:
        transformers.utils.logging.set_verbosity_error()
    # Libraries' bars (tokenizing, downloads, loading shards) redraw with carriage returns: in a log
    # file they are thousands of frames, and N ranks on one terminal draw N bars over each other.
    if not (accelerator.is_local_main_process and not config.disable_tqdm and stream_is_terminal(sys.stderr)):
        datasets.disable_progress_bars()
        transformers.utils.logging.disable_progress_bar()
        huggingface_hub.utils.disable_progress_bars()


# ------------------------------------------------------------------ load data


def load_data(config: TrainConfig, accelerator: Accelerator) -> TrainingData:
    """Prepared splits, the tokenizer and the tokenized sets; bad data or options fail before any model is built."""
    with accelerator.main_process_first():
        prepared = prepare_data(config)
    # Checked as soon as the task is known (--task auto): a metric that doesn't fit fails before any work.
    best_metric, greater_is_better = resolve_best_metric(config.metric_for_best_model, prepared.problem_type)
    extra_metrics = ExtraMetrics(config.extra_metrics)
    tokenizer = load_run_tokenizer(config, accelerator, lambda: _training_texts(config, prepared), config.max_length)
    max_length = config.max_length
    model_limit = getattr(tokenizer, "model_max_length", None)
    if config.model_name_or_path and model_limit and model_limit < 100_000 and max_length > model_limit:
        raise UserError(f"--max_length {max_length} exceeds the model's maximum of {model_limit} tokens")

    has_pair = config.text_pair_column is not None
    with accelerator.main_process_first():
        train_set, truncated_train = tokenize_dataset(prepared.train, tokenizer, max_length, has_pair)
        eval_set, truncated_eval = tokenize_dataset(prepared.validation, tokenizer, max_length, has_pair)
    if truncated_train or truncated_eval:
        logger.warning("truncated to %d tokens: %d training and %d validation texts", max_length,
                       truncated_train, truncated_eval)
    return TrainingData(prepared, tokenizer, train_set, eval_set, {"train": truncated_train, "validation": truncated_eval},
                        best_metric, greater_is_better, extra_metrics)


def _training_texts(config: TrainConfig, prepared: PreparedData) -> list[str]:
    texts = list(prepared.train["text"])
    if config.text_pair_column is not None:
        texts += list(prepared.train["text_pair"])
    return texts


def load_run_tokenizer(config: TrainConfig, accelerator: Accelerator, vocabulary_texts: Callable[[], list[str]],
                       model_max_length: int):
    """The pretrained tokenizer, or (--from_scratch) a WordPiece vocabulary trained on `vocabulary_texts()`.

    Shared by classification and masked-LM. `vocabulary_texts` is called only when a vocabulary is
    built (on the main process, once per run).
    """
    from jbert.tokenization import load_tokenizer, train_japanese_wordpiece

    if not config.from_scratch:
        with accelerator.main_process_first():
            return load_tokenizer(config.tokenizer_name or config.model_name_or_path, mecab_dic=config.mecab_dic,
                                  trust_remote_code=config.trust_remote_code)
    # Trained once by the main process into the checkpoint folder, so every rank and every resume
    # of this run uses the very same vocabulary.
    vocab_dir = config.checkpoint_dir / "tokenizer"
    with accelerator.main_process_first():
        # Published whole (temporary directory, then rename): a run killed between vocab.txt and the
        # tokenizer's other files left a directory that every later run, resumes included, failed to
        # load. tokenizer_config.json is written last, so a directory left that way is rebuilt.
        if accelerator.is_main_process and not (vocab_dir / "tokenizer_config.json").is_file():
            texts = vocabulary_texts()
            logger.info("training a %d-token WordPiece vocabulary on %d texts", config.vocab_size, len(texts))
            with atomic_directory(vocab_dir, overwrite=True) as work_dir:
                train_japanese_wordpiece(texts, config.vocab_size, work_dir, mecab_dic=config.mecab_dic or "unidic_lite",
                                         model_max_length=model_max_length)
        return load_tokenizer(str(vocab_dir), mecab_dic=config.mecab_dic)


# ------------------------------------------------------------------ build model


def build_model(config: TrainConfig, accelerator: Accelerator, data: TrainingData) -> torch.nn.Module:
    """A pretrained checkpoint with a new classification head, or a randomly initialised BERT."""
    problem_type, label_names = data.prepared.problem_type, data.prepared.label_names
    if config.from_scratch:
        return build_scratch_model(config.from_scratch, len(data.tokenizer), data.tokenizer.pad_token_id,
                                   config.max_length, label_names, problem_type, config.dropout)
    with accelerator.main_process_first():
        return load_pretrained_model(config.model_name_or_path, label_names, problem_type, config.dropout,
                                     config.trust_remote_code)


def prepare_run(config: TrainConfig, accelerator: Accelerator, ds_config: Optional[dict], model: torch.nn.Module,
                data: TrainingData) -> Run:
    """Batches, optimizer and learning-rate schedule, all handed to `accelerator.prepare`; the evaluator."""
    world = accelerator.num_processes
    schedule = Schedule.plan(config, len(data.train_set), world)
    single_label = data.prepared.problem_type == "single_label_classification"
    train_dataloader, eval_dataloader = training_dataloaders(
        data.train_set, data.eval_set, per_device_train_batch_size=config.per_device_train_batch_size,
        per_device_eval_batch_size=config.per_device_eval_batch_size, examples_per_step=schedule.examples_per_step,
        seed=config.seed, group_by_length=config.group_by_length, num_workers=config.dataloader_num_workers,
        pad_token_id=data.tokenizer.pad_token_id, label_dtype=torch.long if single_label else torch.float,
        pad_to_multiple_of=8 if accelerator.mixed_precision != "no" else None,
    )
    optimizer = build_optimizer(model, config, ds_config)
    scheduler = build_lr_scheduler(optimizer, config, ds_config, schedule, world)
    model, optimizer, train_dataloader, eval_dataloader, scheduler = accelerator.prepare(
        model, optimizer, train_dataloader, eval_dataloader, scheduler
    )
    evaluator = Evaluator(
        accelerator, model, eval_dataloader, problem_type=data.prepared.problem_type,
        label_names=data.prepared.label_names, threshold=config.multi_label_threshold,
        extra_metrics=data.extra_metrics, best_metric=data.best_metric, greater_is_better=data.greater_is_better,
        best_dir=config.checkpoint_dir / ckpt.BEST_DIR, batches_per_epoch=schedule.batches_per_epoch,
        patience=config.early_stopping_patience,
    )
    logger.info("%d training examples, %d validation; %d process(es) x batch %d x accumulation %d = %d per step; "
                "%d steps over %d epoch(s)", len(data.train_set), len(data.eval_set), world,
                config.per_device_train_batch_size, config.gradient_accumulation_steps,
                schedule.examples_per_step, schedule.max_steps, schedule.num_epochs)
    return Run(model, optimizer, scheduler, train_dataloader, eval_dataloader, schedule, evaluator)


def start_or_resume(config: TrainConfig, accelerator: Accelerator) -> ckpt.TrainerState:
    """A fresh TrainerState, or the one of the checkpoint to resume (model, optimizer, RNGs restored too)."""
    state = ckpt.TrainerState(world_size=accelerator.num_processes)
    resume_path = ckpt.resolve_resume_path(config.resume_from_checkpoint, config.checkpoint_dir)
    if resume_path is not None:
        logger.info("resuming from %s", resume_path)
        state = ckpt.load_checkpoint(accelerator, resume_path, best_dir=config.checkpoint_dir / ckpt.BEST_DIR)
    elif config.resume_from_checkpoint in ckpt.LATEST:
        logger.info("no checkpoint in %s: starting from scratch", config.checkpoint_dir)
    if config.with_tracking:
        accelerator.init_trackers("jbert", config={k: v for k, v in config.to_dict().items()
                                                   if isinstance(v, (int, float, str, bool))})
    return state


# ------------------------------------------------------------------ loop


def train_loop(config: TrainConfig, accelerator: Accelerator, run: Run, state: ckpt.TrainerState,
               on_step_end: Optional[StepCallback] = None) -> dict:
    """Epochs of micro-batches until the last step or early stopping; returns the training throughput."""
    model, schedule, evaluator, world = run.model, run.schedule, run.evaluator, accelerator.num_processes
    started, samples_at_start = time.perf_counter(), state.train_samples_seen
    running_loss, running_batches = torch.zeros((), device=accelerator.device), 0
    stop = state.global_step >= schedule.max_steps
    with Progress(schedule.max_steps, "training", initial=state.global_step,
                  enabled=accelerator.is_local_main_process and not config.disable_tqdm) as progress:
        model.train()
        while not stop and state.epoch < schedule.num_epochs:
            run.train_dataloader.set_epoch(state.epoch)
            batches = run.train_dataloader
            if state.batches_in_epoch:  # resumed mid-epoch: skip only what this epoch already saw
                batches = accelerator.skip_first_batches(run.train_dataloader, state.batches_in_epoch)
            for batch in batches:
                with accelerator.accumulate(model):
                    loss = model(**batch).loss
                    accelerator.backward(loss)
                    if accelerator.sync_gradients and config.max_grad_norm > 0:
                        accelerator.clip_grad_norm_(model.parameters(), config.max_grad_norm)
                    run.optimizer.step()
                    run.scheduler.step()
                    run.optimizer.zero_grad()
                state.batches_in_epoch += 1
                state.train_samples_seen += batch["input_ids"].shape[0] * world
                running_loss += loss.detach().float()
                running_batches += 1
                if not accelerator.sync_gradients:
                    continue  # a micro-batch inside an accumulation: no optimizer step yet
                state.global_step += 1
                if state.global_step % config.logging_steps == 0 or state.global_step == schedule.max_steps:
                    progress.set_values(loss=_log_training_loss(accelerator, state, run.scheduler,
                                                                running_loss / running_batches))
                    running_loss.zero_()
                    running_batches = 0
                progress.update(1)
                if config.eval_strategy == "steps" and state.global_step % config.eval_steps == 0:
                    stop = evaluator(state)
                stop = stop or state.global_step >= schedule.max_steps
                epoch_done = state.batches_in_epoch >= len(run.train_dataloader)
                if epoch_done:
                    state.epoch += 1
                    state.batches_in_epoch = 0
                    if config.eval_strategy == "epoch":
                        stop = evaluator(state) or stop
                if evaluator.last_value is not None:
                    progress.set_values(**{evaluator.best_metric: evaluator.last_value})
                if _checkpoint_due(config.checkpointing_steps, state.global_step, epoch_done):
                    ckpt.save_checkpoint(accelerator, state, config.checkpoint_dir, config.save_total_limit)
                if on_step_end is not None:
                    on_step_end(state.global_step, accelerator)
                if stop:
                    break
    seconds = time.perf_counter() - started
    return {"train_seconds": seconds,
            "train_samples_per_second": (state.train_samples_seen - samples_at_start) / max(seconds, 1e-9)}


def _log_training_loss(accelerator: Accelerator, state: ckpt.TrainerState, scheduler, local_mean: torch.Tensor) -> float:
    """The loss since the last log, averaged over processes, into the history and the trackers."""
    mean_loss = accelerator.reduce(local_mean, reduction="mean").item()
    learning_rate = scheduler.get_last_lr()[0]
    state.history.append({"step": state.global_step, "train_loss": mean_loss, "learning_rate": learning_rate})
    accelerator.log({"train/loss": mean_loss, "train/learning_rate": learning_rate}, step=state.global_step)
    return mean_loss


def _checkpoint_due(checkpointing: Optional[str], global_step: int, epoch_done: bool) -> bool:
    if not checkpointing:
        return False
    if checkpointing == "epoch":
        return epoch_done
    return checkpointing.isdigit() and global_step % int(checkpointing) == 0


# ------------------------------------------------------------------ finish


def finish(config: TrainConfig, accelerator: Accelerator, data: TrainingData, run: Run, state: ckpt.TrainerState,
           throughput: dict) -> dict:
    """Evaluate the last step if not yet done, write the model directory, release the processes."""
    if not run.evaluator.has_evaluated(state):
        run.evaluator(state)
    accelerator.wait_for_everyone()
    final = {}
    if accelerator.is_main_process:
        final = write_model_dir(config, data.prepared, data.tokenizer, state, data.best_metric, accelerator.device,
                                truncated=data.truncated, throughput=throughput)
        remove_working_files(config.checkpoint_dir)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    # Tear the process group down before the interpreter exits: left to atexit, gloo's threads can
    # abort a finished rank ("terminate called without an active exception", exit -6).
    accelerator.state.destroy_process_group()
    return final
