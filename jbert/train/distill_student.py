"""The student of --task distill, and the model the loop trains: the student plus its distillation loss.

    --from_scratch tiny|mini|small   a random BERT of that size (jbert.train.modeling), with the
                                     teacher's tokenizer (--distill_tokenizer teacher) or its own
    --student_layers 0,2,4           the first teacher's own model with only those encoder layers
                                     (embeddings, the chosen layers and the head copied, as DistilBERT)
    --model_name_or_path DIR         any model directory or hub id, with a fresh head

`DistillationModel` wraps the student so that the one loop's `model(**batch).loss` is the
distillation loss; it saves the bare student (`save_pretrained`), so the best weights, the model
directory and export.py see an ordinary sequence classifier.
"""

from __future__ import annotations

import copy
import json
import logging

import torch
from transformers.modeling_outputs import SequenceClassifierOutput

from jbert.core.errors import UserError
from jbert.data.labels import MULTI_LABEL
from jbert.train.distill_options import parse_student_layers
from jbert.train.distill_teacher import REGRESSION, Teacher
from jbert.train.modeling import build_scratch_model, load_pretrained_model, set_dropout

logger = logging.getLogger("jbert")


def build_student(config, teacher: Teacher, tokenizer, label_names: list[str], problem_type: str) -> torch.nn.Module:
    """The student network (not yet wrapped) the options ask for."""
    if config.student_layers:
        return student_from_teacher_layers(teacher, parse_student_layers(config.student_layers), config.dropout)
    if config.from_scratch:
        return build_scratch_model(config.from_scratch, len(tokenizer), tokenizer.pad_token_id, config.max_length,
                                   label_names, problem_type, config.dropout)
    return load_pretrained_model(config.model_name_or_path, label_names, problem_type, config.dropout,
                                 config.trust_remote_code)


def check_student_layers(config, teacher: Teacher) -> None:
    """--student_layers against the teacher's config, before any file is written (the model is built later)."""
    if not config.student_layers:
        return
    if teacher.kind != "model":
        raise UserError(f"--student_layers copies layers from a model directory, but --teacher {teacher.path} is an "
                        "export directory; give the model directory it was exported from (first in --teacher)")
    layers = parse_student_layers(config.student_layers)
    count = int(json.loads((teacher.path / "config.json").read_text(encoding="utf-8")).get("num_hidden_layers", 0))
    too_high = [index for index in layers if index >= count]
    if too_high:
        raise UserError(f"--student_layers {config.student_layers}: --teacher {teacher.path} has layers 0-{count - 1} only")


def student_from_teacher_layers(teacher: Teacher, layers: list[int], dropout: float | None = None) -> torch.nn.Module:
    """The teacher model directory's network keeping only encoder `layers` (in that order)."""
    from transformers import AutoModelForSequenceClassification

    if teacher.kind != "model":
        raise UserError(f"--student_layers copies layers from a model directory, but --teacher {teacher.path} is an "
                        "export directory; give the model directory it was exported from (first in --teacher)")
    model = AutoModelForSequenceClassification.from_pretrained(teacher.path, trust_remote_code=False)
    encoder = getattr(model.base_model, "encoder", None)
    stack = getattr(encoder, "layer", None)
    if not isinstance(stack, torch.nn.ModuleList):
        raise UserError(f"--student_layers: {teacher.path} ({type(model).__name__}) has no BERT-style encoder.layer "
                        "stack to copy; use --from_scratch instead")
    too_high = [index for index in layers if index >= len(stack)]
    if too_high:
        raise UserError(f"--student_layers {','.join(map(str, layers))}: the teacher has layers 0-{len(stack) - 1} only")
    encoder.layer = torch.nn.ModuleList([copy.deepcopy(stack[index]) for index in layers])
    model.config.num_hidden_layers = len(layers)
    if dropout is not None:
        for module in model.modules():
            if isinstance(module, torch.nn.Dropout):
                module.p = dropout
        set_dropout(model.config, dropout)  # the modules above are built: the config says what they now use
    logger.info("student: %s layers %s of %d", teacher.path, layers, len(stack))
    return model


def distillation_loss(logits: torch.Tensor, soft_targets: torch.Tensor, labels: torch.Tensor,
                      label_mask: torch.Tensor, problem_type: str, temperature: float, alpha: float) -> torch.Tensor:
    """Mean over the batch of alpha * soft + (1 - alpha) * hard on labelled rows, soft alone on the others.

    soft: single-label KL(teacher || student) of the softmaxes at the temperature, multi-label the
    per-label binary cross-entropy against the teachers' sigmoids, both times temperature squared
    (the gradients keep their size as the temperature changes); regression: squared error to the
    teachers' value.
    """
    functional = torch.nn.functional
    logits = logits.float()
    if problem_type == REGRESSION:
        soft = (logits.view(-1) - soft_targets.view(-1)) ** 2
        hard = (logits.view(-1) - labels.float().view(-1)) ** 2
    elif problem_type == MULTI_LABEL:
        soft = functional.binary_cross_entropy_with_logits(logits / temperature, soft_targets, reduction="none").mean(-1)
        soft = soft * temperature ** 2
        hard = functional.binary_cross_entropy_with_logits(logits, labels.float(), reduction="none").mean(-1)
    else:
        log_student = functional.log_softmax(logits / temperature, dim=-1)
        soft = functional.kl_div(log_student, soft_targets, reduction="none").sum(-1) * temperature ** 2
        hard = functional.cross_entropy(logits, labels.long(), reduction="none")
    labelled = label_mask.float()
    soft_weight = labelled * alpha + (1 - labelled)
    return (soft_weight * soft + labelled * (1 - alpha) * hard).mean()


class DistillationModel(torch.nn.Module):
    """The student, whose forward adds the distillation loss when the batch carries soft targets."""

    def __init__(self, student: torch.nn.Module, problem_type: str, temperature: float, alpha: float,
                 intermediate: torch.nn.Module | None = None):
        super().__init__()
        self.student = student
        self.problem_type = problem_type
        self.temperature = temperature
        self.alpha = alpha
        # --distill_hidden_weight / --distill_attention_weight (jbert.train.distill_intermediate): trained, not saved
        self.intermediate = intermediate

    @property
    def config(self):
        """The student's config (what a loaded model directory will have)."""
        return self.student.config

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, labels=None, soft_targets=None,
                label_mask=None):
        """Student logits; with soft_targets (training batches) also the distillation loss."""
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            inputs["token_type_ids"] = token_type_ids
        intermediate = self.intermediate if soft_targets is not None else None
        output = self.student(**inputs, **(intermediate.output_flags() if intermediate is not None else {}))
        logits = output.logits
        loss = None
        if soft_targets is not None:
            if label_mask is None:
                label_mask = torch.ones(logits.shape[0], dtype=torch.bool, device=logits.device)
            loss = distillation_loss(logits, soft_targets, labels, label_mask, self.problem_type,
                                     self.temperature, self.alpha)
            if intermediate is not None:
                loss = loss + intermediate(output, inputs)
        return SequenceClassifierOutput(loss=loss, logits=logits)

    def save_pretrained(self, directory, state_dict=None, **kwargs):
        """Save the bare student (transformers layout), from the wrapper's state dict when given."""
        if state_dict is not None:
            prefix = "student."
            state_dict = {name[len(prefix):]: value for name, value in state_dict.items() if name.startswith(prefix)}
        self.student.save_pretrained(directory, state_dict=state_dict, **kwargs)
