"""--distill_hidden_weight: the student's hidden states also learn the teacher's (TinyBERT's intermediate-layer loss).

    student hidden states (embeddings, layer 1..S)  --(learned projection when widths differ)-->
    mean squared difference, over the real (unpadded) tokens, from the teacher's hidden states at the
    mapped layers: the embeddings to the embeddings; with --student_layers each layer to the teacher
    layer it was copied from, otherwise student layer k to teacher layer round(k * T / S) (uniform,
    as TinyBERT's g(m) = m * N / M)

Hidden states are per token, far too large to cache as the output logits are, so the (first)
teacher runs beside the student on every training batch, in PyTorch and without gradients: it must
be a model directory, and the student must share its tokenizer (the same token ids go to both).
The projection is trained with the student (it is in the checkpoints) and dropped from the saved
model directory, which stays an ordinary sequence classifier.
"""

from __future__ import annotations

import logging

import torch

from jbert.core.errors import UserError
from jbert.train.positions import max_length_problem, pretrained_position_limit

logger = logging.getLogger("jbert")


def layer_map(student_layers: int, teacher_layers: int, copied_from: list[int] | None = None) -> list[int]:
    """Teacher hidden-state index for each student hidden-state index (0 = embeddings, k = after layer k)."""
    if copied_from:
        return [0] + [index + 1 for index in copied_from]
    return [0] + [round(k * teacher_layers / student_layers) for k in range(1, student_layers + 1)]


def check_hidden_loss(config, teacher, tokenizer) -> None:
    """--distill_hidden_weight needs a model-directory teacher that reads the student's token ids; else UserError."""
    if config.distill_hidden_weight <= 0:
        return
    if teacher.kind != "model":
        raise UserError(f"--distill_hidden_weight runs the teacher beside the student, but --teacher {teacher.path} is "
                        "an export directory; give the model directory it was exported from (first in --teacher), "
                        "or --distill_hidden_weight 0")
    if tokenizer.get_vocab() != teacher.tokenizer.get_vocab():
        raise UserError(f"--distill_hidden_weight compares hidden states token by token, so the student must use the "
                        f"tokenizer of --teacher {teacher.path} (--distill_tokenizer teacher, no other "
                        "--tokenizer_name), or --distill_hidden_weight 0")
    # The teacher reads the student's full-length batches: its positions bound --max_length (RoBERTa offsets counted).
    problem = max_length_problem(config.max_length, pretrained_position_limit(str(teacher.path)),
                                 f"--teacher {teacher.path}")
    if problem:
        raise UserError(f"--distill_hidden_weight: {problem}")


class HiddenStateLoss(torch.nn.Module):
    """Projection (student width -> teacher width) and the masked mean squared difference at the mapped layers."""

    def __init__(self, teacher_model: torch.nn.Module, student_width: int, mapping: list[int]):
        super().__init__()
        teacher_width = teacher_model.config.hidden_size
        self.projection = (torch.nn.Identity() if teacher_width == student_width
                           else torch.nn.Linear(student_width, teacher_width, bias=False))
        self.mapping = mapping
        # Not a submodule: the teacher is neither trained, nor in the optimizer, nor in a checkpoint.
        object.__setattr__(self, "_teacher", [teacher_model.eval().requires_grad_(False)])

    def forward(self, student_hidden: tuple, inputs: dict) -> torch.Tensor:
        """Mean over the mapped layers of the per-token squared difference, over the tokens with attention."""
        teacher = self._teacher[0]
        device = student_hidden[0].device
        if next(teacher.parameters()).device != device:
            teacher.to(device)
        with torch.no_grad():
            teacher.eval()
            teacher_hidden = teacher(**inputs, output_hidden_states=True).hidden_states
        mask = inputs.get("attention_mask")
        mask = torch.ones(student_hidden[0].shape[:2], device=device) if mask is None else mask.to(device).float()
        total = 0.0
        for student_index, teacher_index in enumerate(self.mapping):
            difference = self.projection(student_hidden[student_index].float()) - teacher_hidden[teacher_index].float()
            per_token = (difference ** 2).mean(-1)
            total = total + (per_token * mask).sum() / mask.sum().clamp(min=1)
        return total / len(self.mapping)


def build_hidden_loss(config, teacher, student: torch.nn.Module) -> HiddenStateLoss | None:
    """The hidden-state loss of the run (None when --distill_hidden_weight is 0)."""
    if config.distill_hidden_weight <= 0:
        return None
    from transformers import AutoModelForSequenceClassification

    from jbert.train.distill_options import parse_student_layers

    teacher_model = AutoModelForSequenceClassification.from_pretrained(teacher.path, trust_remote_code=False)
    copied = parse_student_layers(config.student_layers) if config.student_layers else None
    mapping = layer_map(student.config.num_hidden_layers, teacher_model.config.num_hidden_layers, copied)
    logger.info("hidden-state distillation (weight %g): student hidden states %s <- teacher's %s%s",
                config.distill_hidden_weight, list(range(len(mapping))), mapping,
                "" if teacher_model.config.hidden_size == student.config.hidden_size else
                f", projected {student.config.hidden_size} -> {teacher_model.config.hidden_size}")
    return HiddenStateLoss(teacher_model, student.config.hidden_size, mapping)
