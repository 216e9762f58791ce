"""Intermediate-layer losses of --task distill (TinyBERT's): hidden states and attention, beside the logits.

    --distill_hidden_weight W     student hidden states (embeddings, layer 1..S) --(learned projection
                                  when widths differ)--> mean squared difference, over the real
                                  (unpadded) tokens, from the teacher's hidden states at the mapped layers
    --distill_attention_weight W  each student layer's self-attention distributions -> KL divergence
                                  from the mapped teacher layer's, per head when the head counts are
                                  equal, else of the head-averaged distributions; over the real query tokens

Mapping: the embeddings to the embeddings; with --student_layers each layer to the teacher layer it
was copied from, otherwise student layer k to teacher layer round(k * T / S) (uniform, as TinyBERT's
g(m) = m * N / M). TinyBERT fits the attention scores before the softmax; transformers returns the
distributions after it, so the attention loss is MiniLM's: KL(teacher || student) of the
distributions, which needs no projection and is 0 exactly when the student attends as the teacher.

Hidden states and attention maps are per token, far too large to cache as the output logits are,
so the (first) teacher runs beside the student on every training batch, in PyTorch and without
gradients: it must be a model directory, and the student must share its tokenizer (the same token
ids go to both). The projection is trained with the student (it is in the checkpoints) and dropped
from the saved model directory, which stays an ordinary sequence classifier. Attention maps need
the eager attention (SDPA does not return them): both models use it for the run (see
use_attention_maps), and the saved config does not record it.
"""

from __future__ import annotations

import logging

import torch

from jbert.core.errors import UserError
from jbert.train.distill_options import WEIGHT_OPTIONS
from jbert.train.positions import max_length_problem, pretrained_position_limit

logger = logging.getLogger("jbert")


def layer_map(student_layers: int, teacher_layers: int, copied_from: list[int] | None = None) -> list[int]:
    """Teacher hidden-state index for each student hidden-state index (0 = embeddings, k = after layer k)."""
    if copied_from:
        return [0] + [index + 1 for index in copied_from]
    return [0] + [round(k * teacher_layers / student_layers) for k in range(1, student_layers + 1)]


def _asked(config) -> list[str]:
    """The intermediate-loss options with a positive weight, as --flags."""
    return [f"--{name}" for name in WEIGHT_OPTIONS if getattr(config, name) > 0]


def check_intermediate_losses(config, teacher, tokenizer) -> None:
    """The intermediate losses need a model-directory teacher that reads the student's token ids; else UserError."""
    asked = _asked(config)
    if not asked:
        return
    flags, off = " / ".join(asked), " and ".join(f"{flag} 0" for flag in asked)
    if teacher.kind != "model":
        raise UserError(f"{flags} runs the teacher beside the student, but --teacher {teacher.path} is "
                        "an export directory; give the model directory it was exported from (first in --teacher), "
                        f"or {off}")
    if tokenizer.get_vocab() != teacher.tokenizer.get_vocab():
        raise UserError(f"{flags} compares the models token by token, so the student must use the "
                        f"tokenizer of --teacher {teacher.path} (--distill_tokenizer teacher, no other "
                        f"--tokenizer_name), or {off}")
    # The teacher reads the student's full-length batches: its positions bound --max_length (RoBERTa offsets counted).
    problem = max_length_problem(config.max_length, pretrained_position_limit(str(teacher.path)),
                                 f"--teacher {teacher.path}")
    if problem:
        raise UserError(f"{flags}: {problem}")


def _query_mask(inputs: dict, shape: torch.Size, device) -> torch.Tensor:
    """(batch, length) float mask of the real tokens (all ones without an attention mask)."""
    mask = inputs.get("attention_mask")
    return torch.ones(shape, device=device) if mask is None else mask.to(device).float()


def attention_divergence(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over heads and real query tokens of KL(teacher row || student row); maps are (batch, heads, q, k).

    With different head counts both sides are averaged over their heads first (a mean of
    distributions is a distribution). Padded keys carry (almost) no teacher probability, so they
    add nothing; padded query rows are masked out.
    """
    student, teacher = student.float(), teacher.float()
    if student.shape[1] != teacher.shape[1]:
        student, teacher = student.mean(1, keepdim=True), teacher.mean(1, keepdim=True)
    per_row = (torch.xlogy(teacher, teacher) - teacher * torch.log(student.clamp(min=1e-12))).sum(-1)  # (b, h, q)
    weights = mask[:, None, :].expand_as(per_row)
    return (per_row * weights).sum() / weights.sum().clamp(min=1)


class IntermediateLoss(torch.nn.Module):
    """Runs the teacher on the student's batch; weighted hidden-state and attention losses at the mapped layers."""

    def __init__(self, teacher_model: torch.nn.Module, student_width: int, mapping: list[int],
                 hidden_weight: float = 0.0, attention_weight: float = 0.0):
        super().__init__()
        teacher_width = teacher_model.config.hidden_size
        self.projection = (torch.nn.Identity() if teacher_width == student_width or hidden_weight <= 0
                           else torch.nn.Linear(student_width, teacher_width, bias=False))
        self.mapping = mapping
        # (student layer, teacher layer) of each attention map: attention index k - 1 is layer k's
        self.attention_pairs = [(k - 1, mapping[k] - 1) for k in range(1, len(mapping))]
        self.hidden_weight, self.attention_weight = hidden_weight, attention_weight
        # Not a submodule: the teacher is neither trained, nor in the optimizer, nor in a checkpoint.
        object.__setattr__(self, "_teacher", [teacher_model.eval().requires_grad_(False)])

    def output_flags(self) -> dict:
        """The output flags both models' forward passes need for this loss."""
        return {"output_hidden_states": self.hidden_weight > 0, "output_attentions": self.attention_weight > 0}

    def forward(self, student_output, inputs: dict) -> torch.Tensor:
        """hidden_weight x the hidden-state loss + attention_weight x the attention loss of this batch."""
        teacher = self._teacher[0]
        reference = student_output.logits
        if next(teacher.parameters()).device != reference.device:
            teacher.to(reference.device)
        with torch.no_grad():  # in eval mode since __init__: it is not a submodule, so model.train() never reaches it
            teacher_output = teacher(**inputs, **self.output_flags())
        mask = _query_mask(inputs, inputs["input_ids"].shape, reference.device)
        total = reference.new_zeros(())
        if self.hidden_weight > 0:
            total = total + self.hidden_weight * self.hidden_state_loss(
                student_output.hidden_states, teacher_output.hidden_states, mask)
        if self.attention_weight > 0:
            total = total + self.attention_weight * self.attention_loss(
                student_output.attentions, teacher_output.attentions, mask)
        return total

    def hidden_state_loss(self, student_hidden: tuple, teacher_hidden: tuple, mask: torch.Tensor) -> torch.Tensor:
        """Mean over the mapped layers of the per-token squared difference, over the tokens with attention."""
        total = 0.0
        for student_index, teacher_index in enumerate(self.mapping):
            difference = self.projection(student_hidden[student_index].float()) - teacher_hidden[teacher_index].float()
            per_token = (difference ** 2).mean(-1)
            total = total + (per_token * mask).sum() / mask.sum().clamp(min=1)
        return total / len(self.mapping)

    def attention_loss(self, student_maps: tuple, teacher_maps: tuple, mask: torch.Tensor) -> torch.Tensor:
        """Mean over the student's layers of the attention divergence from the mapped teacher layer."""
        if student_maps is None or teacher_maps is None or any(m is None for m in (*student_maps, *teacher_maps)):
            raise RuntimeError("the models returned no attention maps although the eager attention was set")
        return sum(attention_divergence(student_maps[s], teacher_maps[t], mask)
                   for s, t in self.attention_pairs) / len(self.attention_pairs)


def _returns_attention_maps(model: torch.nn.Module) -> bool:
    """Whether a forward pass of `model` with output_attentions gives a map for every layer (a 4-token probe)."""
    probe = torch.full((1, 4), min(2, model.config.vocab_size - 1), dtype=torch.long)
    with torch.no_grad():
        maps = model(input_ids=probe, attention_mask=torch.ones_like(probe), output_attentions=True).attentions
    return bool(maps) and all(m is not None for m in maps)


def use_attention_maps(model: torch.nn.Module, name: str) -> None:
    """Make `model` return attention maps (SDPA does not): the eager attention where the model can switch.

    transformers 4.57's BERT cannot switch after loading, but its SDPA attention falls back to the
    eager one when maps are asked for; 5.x models switch. A model that gives no maps either way is
    refused with a UserError."""
    if _returns_attention_maps(model):
        return
    if hasattr(model, "set_attn_implementation"):
        model.set_attn_implementation("eager")
    if not _returns_attention_maps(model):
        raise UserError(f"--distill_attention_weight needs the attention maps of the {name} "
                        f"({type(model).__name__}), which it does not return; use --distill_attention_weight 0")


def build_intermediate_loss(config, teacher, student: torch.nn.Module) -> IntermediateLoss | None:
    """The intermediate-layer loss of the run (None when no weight is set)."""
    if not _asked(config):
        return None
    from transformers import AutoModelForSequenceClassification

    from jbert.train.distill_options import parse_student_layers

    teacher_model = AutoModelForSequenceClassification.from_pretrained(teacher.path, trust_remote_code=False)
    attention_weight = config.distill_attention_weight
    if attention_weight > 0:
        use_attention_maps(teacher_model, "teacher")
        use_attention_maps(student, "student")
    copied = parse_student_layers(config.student_layers) if config.student_layers else None
    mapping = layer_map(student.config.num_hidden_layers, teacher_model.config.num_hidden_layers, copied)
    widths = (student.config.hidden_size, teacher_model.config.hidden_size)
    heads = (student.config.num_attention_heads, teacher_model.config.num_attention_heads)
    logger.info("intermediate-layer distillation (hidden %g, attention %g): student layers %s <- teacher's %s%s%s",
                config.distill_hidden_weight, attention_weight, list(range(len(mapping))), mapping,
                f", hidden states projected {widths[0]} -> {widths[1]}"
                if config.distill_hidden_weight > 0 and widths[0] != widths[1] else "",
                f", attention averaged over heads ({heads[0]} vs {heads[1]})"
                if attention_weight > 0 and heads[0] != heads[1] else "")
    return IntermediateLoss(teacher_model, student.config.hidden_size, mapping, config.distill_hidden_weight,
                            attention_weight)
