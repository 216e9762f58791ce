"""The training loop on Accelerate, for every task, from data files to a model directory: `train(config)`.

`train` is five stages, read top to bottom (each a function of this module):

    set up       set_up: the Accelerator (launch mode from `accelerate launch`), logging, seeds
    load data    task.load_data: texts, the tokenizer, tokenized sets (main process first)
    build model  task.build_model, prepare_run: the model; batches, AdamW, schedule; `accelerator.prepare`
    loop         start_or_resume, train_loop: `accumulate` / backward / step; log, evaluate, checkpoint
    finish       finish: a last evaluation, the model directory (jbert.train.model_writer), clean-up

The task (jbert.train.tasks: classification, or masked-LM with --task mlm) supplies only what
differs: data, model, evaluation and its files in the model directory. Everything else here is
shared, the one-line message when another process of the run dies or hangs included.

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

from jbert.core.artifacts import check_output_dir
from jbert.core.progress import Progress, stream_is_terminal
from jbert.train import checkpoint as ckpt
from jbert.train import hardware, process_group, qat
from jbert.train.config import TrainConfig
from jbert.train.deepspeed_config import prepare_deepspeed_config
from jbert.train.evaluation import Evaluator
from jbert.train.model_writer import remove_working_files, write_model_dir
from jbert.train.optimization import Schedule, build_lr_scheduler, build_optimizer
from jbert.train.task_protocol import RunFacts, Task, TaskData
from jbert.train.tasks import task_for

logger = logging.getLogger("jbert")

StepCallback = Callable[[int, Accelerator], None]
"""on_step_end(global_step, accelerator): see `train`."""


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
    # loss(model, batch) of one micro-batch: the model's own, unless the task brings one (jbert.train.document_batches)
    training_loss: Callable[[torch.nn.Module, dict], torch.Tensor]


def train(config: TrainConfig, on_step_end: Optional[StepCallback] = None,
          on_evaluate: Optional[Callable[[dict], None]] = None, task: Optional[Task] = None) -> dict:
    """Train the task of `config` (or `task`) and write the model directory; returns the final metrics.

    on_step_end: called as `on_step_end(global_step, accelerator)` on every process after each
    optimizer step, once that step's logging, evaluation and checkpoint are done. For monitoring,
    and for tests that stop a run at a known step: an exception raised there ends the run as a
    crash would (no model directory; checkpoints stay for --resume_from_checkpoint).
    on_evaluate: called as `on_evaluate(record)` with every evaluation record (step, epoch, eval_*
    figures) as it is made; it may raise to abandon the run (--hp_search prunes trials so).
    task: what to train (a jbert.train.task_protocol.Task); by default the one --task names (task_for).
    """
    task = task if task is not None else task_for(config)
    accelerator, ds_config = set_up(config)
    # A process of the run that dies or hangs makes the others' collectives fail: one message, not a
    # backend traceback per rank (and no abort in gloo's threads at exit), whatever the task.
    with process_group.collective_failures_explained(config.collective_timeout_seconds):
        data = task.load_data(config, accelerator)
        model = task.build_model(config, accelerator, data)
        run = prepare_run(config, accelerator, ds_config, task, model, data)
        run.evaluator.on_evaluate = on_evaluate
        state = start_or_resume(config, accelerator)
        if task.evaluates_starting_point and state.global_step == 0:
            run.evaluator(state)
        throughput = train_loop(config, accelerator, run, state, on_step_end)
        return finish(config, accelerator, task, data, run, state, throughput)


# ------------------------------------------------------------------ set up


def set_up(config: TrainConfig) -> tuple[Accelerator, Optional[dict]]:
    """The Accelerator of this launch, logging and seeds; a taken output_dir fails now, not after training."""
    accelerator = Accelerator(
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        mixed_precision=config.mixed_precision,
        log_with=config.report_to if config.with_tracking else None,
        project_dir=str(config.checkpoint_dir),
        # gloo on CPU-only machines (DDP and DeepSpeed alike); the collective timeout chosen, not inherited
        **process_group.accelerator_init_kwargs(config.collective_timeout_seconds),
    )
    process_group.verify_process_group(accelerator)
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


# ------------------------------------------------------------------ build model


def prepare_run(config: TrainConfig, accelerator: Accelerator, ds_config: Optional[dict], task: Task,
                model: torch.nn.Module, data: TaskData) -> Run:
    """The task's batches, the optimizer and learning-rate schedule, all handed to `accelerator.prepare`; the evaluator."""
    world = accelerator.num_processes
    schedule = Schedule.plan(config, len(data.train_set), world)
    train_dataloader, eval_dataloader = task.dataloaders(config, accelerator, data, schedule)
    optimizer = build_optimizer(model, config, ds_config)
    scheduler = build_lr_scheduler(optimizer, config, ds_config, schedule, world)
    model, optimizer, train_dataloader, eval_dataloader, scheduler = accelerator.prepare(
        model, optimizer, train_dataloader, eval_dataloader, scheduler
    )
    evaluator = Evaluator(
        accelerator, model, eval_dataloader,
        evaluate=lambda prepared_model, dataloader: task.evaluate(prepared_model, dataloader, accelerator, data),
        best_metric=data.best_metric, greater_is_better=data.greater_is_better,
        best_dir=config.checkpoint_dir / ckpt.BEST_DIR, batches_per_epoch=schedule.batches_per_epoch,
        patience=config.early_stopping_patience,
    )
    logger.info("%s: %d training examples, %d validation; %d process(es) x batch %d x accumulation %d = %d per step; "
                "%d steps over %d epoch(s)", task.name, len(data.train_set), len(data.eval_set), world,
                config.per_device_train_batch_size, config.gradient_accumulation_steps,
                schedule.examples_per_step, schedule.max_steps, schedule.num_epochs)
    task_loss = getattr(task, "training_loss", None)
    return Run(model, optimizer, scheduler, train_dataloader, eval_dataloader, schedule, evaluator,
               (task_loss(config, data) if task_loss is not None else None) or _model_loss)


def _model_loss(model: torch.nn.Module, batch: dict) -> torch.Tensor:
    """The loss the model computes from the batch's labels (every task but document training)."""
    return model(**batch).loss


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
    tokens = hardware.TokenCounter(accelerator.device)  # real vs padded tokens, for the hardware figures
    stop = state.global_step >= schedule.max_steps
    qat_schedule = qat.plan(config, accelerator, model, evaluator, schedule.num_epochs)  # None without --qat
    with Progress(schedule.max_steps, "training", initial=state.global_step,
                  enabled=accelerator.is_local_main_process and not config.disable_tqdm) as progress:
        model.train()
        while not stop and state.epoch < schedule.num_epochs:
            if qat_schedule is not None:
                qat_schedule.at_epoch_start(state)
            run.train_dataloader.set_epoch(state.epoch)
            batches = run.train_dataloader
            if state.batches_in_epoch:  # resumed mid-epoch: skip only what this epoch already saw
                batches = accelerator.skip_first_batches(run.train_dataloader, state.batches_in_epoch)
            for batch in batches:
                with accelerator.accumulate(model):
                    loss = run.training_loss(model, batch)
                    accelerator.backward(loss)
                    if accelerator.sync_gradients and config.max_grad_norm > 0:
                        accelerator.clip_grad_norm_(model.parameters(), config.max_grad_norm)
                    run.optimizer.step()
                    run.scheduler.step()
                    run.optimizer.zero_grad()
                state.batches_in_epoch += 1
                state.train_samples_seen += batch["input_ids"].shape[0] * world
                tokens.add(batch)
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
    throughput = {"train_seconds": seconds,
                  "train_samples_per_second": (state.train_samples_seen - samples_at_start) / max(seconds, 1e-9)}
    if accelerator.is_main_process:  # only this process writes them (metrics.json, the card)
        throughput["hardware"] = hardware.utilisation(accelerator.unwrap_model(model), tokens, seconds, world,
                                                      accelerator.device, accelerator.mixed_precision)
        logger.info("%s", hardware.log_line(throughput["hardware"]))
    return throughput


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


def finish(config: TrainConfig, accelerator: Accelerator, task: Task, data: TaskData, run: Run,
           state: ckpt.TrainerState, throughput: dict) -> dict:
    """Evaluate the last step if not yet done, write the model directory, release the processes."""
    if not run.evaluator.has_evaluated(state):
        run.evaluator(state)
    accelerator.wait_for_everyone()
    final = {}
    if accelerator.is_main_process:
        # Only this process writes: a model reloaded meanwhile must not wait for the others (ZeRO-3).
        with process_group.models_load_on_this_process_alone(accelerator):
            final = write_model_dir(config, task, data, state, RunFacts(accelerator.device, throughput))
        remove_working_files(config.checkpoint_dir)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    # Tear the process group down before the interpreter exits: left to atexit, gloo's threads can
    # abort a finished rank ("terminate called without an active exception", exit -6).
    accelerator.state.destroy_process_group()
    return final
