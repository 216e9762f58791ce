"""Quantisation-aware training (--qat): the last epochs of a run see the int8 that export.py will make.

`export.py --quantize` makes int8 with onnxruntime's dynamic quantisation (Optimum's presets):

    every MatMul / Gemm weight     int8, symmetric, per tensor (scale = max|w| / 127), or per output
                                   channel with export's --per_channel (--qat_per_channel here)
    every MatMul / Gemm input      uint8, asymmetric, per tensor, range of the batch at run time
    embedding tables (Gather)      uint8, asymmetric, per tensor        (quantised like activations)

With --qat the loop switches, at the start of the first of the last --qat_epochs epochs, every
`nn.Linear` and `nn.Embedding` of the model to compute with PyTorch's own fake quantisation
(`torch.ao.quantization.FakeQuantize` with min/max observers: quantise-dequantise forward,
straight-through gradients) in exactly those three forms. The observers are reset on every batch,
so ranges are those of the batch (as onnxruntime's dynamic quantisation does) and QAT carries no
state of its own: resuming a checkpoint rebuilds it from the epoch number, and a resumed run equals
an uninterrupted one. What onnxruntime also quantises but this does not simulate: the two attention
matmuls (query x key, probabilities x value), which are functional matmuls inside the attention
module, not `nn.Linear` layers (PyTorch's eager QAT does not cover them either).

The trainable weights stay fp32 (small updates must accumulate between grid points); the weights
saved as the best ones are the fp32 weights snapped onto their int8 grid (`snapped_state_dict`), so
the model directory is a normal `save_pretrained` directory whose fp32 weights export's int8
reproduces exactly. Only evaluations made with QAT on compete for the best weights: the best figure
is forgotten when QAT starts.
"""

from __future__ import annotations

import logging
import types
from typing import Optional

import torch

logger = logging.getLogger("jbert")

WEIGHT_QMIN, WEIGHT_QMAX = -127, 127  # onnxruntime's symmetric int8 range (-128 unused)
ACTIVATION_QMIN, ACTIVATION_QMAX = 0, 255  # uint8, asymmetric, the range always includes 0


def _weight_fake_quant(per_channel: bool):
    """Symmetric int8, per output channel or per tensor, as onnxruntime quantises MatMul/Gemm weights."""
    from torch.ao.quantization import FakeQuantize, MinMaxObserver, PerChannelMinMaxObserver

    if per_channel:
        return FakeQuantize(observer=PerChannelMinMaxObserver, quant_min=WEIGHT_QMIN, quant_max=WEIGHT_QMAX,
                            dtype=torch.qint8, qscheme=torch.per_channel_symmetric, ch_axis=0)
    return FakeQuantize(observer=MinMaxObserver, quant_min=WEIGHT_QMIN, quant_max=WEIGHT_QMAX,
                        dtype=torch.qint8, qscheme=torch.per_tensor_symmetric)


def _tensor_fake_quant():
    """Per-tensor asymmetric uint8 (activations at run time, and embedding tables)."""
    from torch.ao.quantization import FakeQuantize, MinMaxObserver

    return FakeQuantize(observer=MinMaxObserver, quant_min=ACTIVATION_QMIN, quant_max=ACTIVATION_QMAX,
                        dtype=torch.quint8, qscheme=torch.per_tensor_affine)


def fake_quantize(fake_quant, tensor: torch.Tensor) -> torch.Tensor:
    """TENSOR quantised and dequantised with ranges of TENSOR alone (the observer forgets earlier calls)."""
    fake_quant.activation_post_process.reset_min_max_vals()
    if tensor.dtype != torch.float32:  # under autocast: observe and round in fp32, hand back the dtype
        return fake_quant(tensor.float()).to(tensor.dtype)
    return fake_quant(tensor)


def _quantised_linear_forward(module: torch.nn.Linear, inputs: torch.Tensor) -> torch.Tensor:
    quant = module._jbert_qat
    if not quant["switch"]["on"]:  # the fp32 reference pass of --qat_consistency
        return torch.nn.functional.linear(inputs, module.weight, module.bias)
    return torch.nn.functional.linear(fake_quantize(quant["input"], inputs), fake_quantize(quant["weight"], module.weight),
                                      module.bias)


def _quantised_embedding_forward(module: torch.nn.Embedding, inputs: torch.Tensor) -> torch.Tensor:
    quant = module._jbert_qat
    weight = fake_quantize(quant["weight"], module.weight) if quant["switch"]["on"] else module.weight
    return torch.nn.functional.embedding(inputs, weight, module.padding_idx, module.max_norm, module.norm_type,
                                         module.scale_grad_by_freq, module.sparse)


def quantisable_modules(model: torch.nn.Module) -> dict[str, torch.nn.Module]:
    """name -> every nn.Linear and nn.Embedding of MODEL (what export's dynamic int8 quantises)."""
    return {name: module for name, module in model.named_modules()
            if isinstance(module, (torch.nn.Linear, torch.nn.Embedding))}


def attach(model: torch.nn.Module, per_channel: bool = False, switch: Optional[dict] = None) -> int:
    """Make every Linear and Embedding of MODEL compute with fake int8; returns how many.

    The fake-quant modules are kept outside the module tree (a plain dict on each layer), so the
    state dict, the optimizer's parameters and checkpoints stay exactly as without QAT. SWITCH
    ({"on": bool}, shared by every layer) turns the fake int8 off for a pass while attached.
    """
    switch = switch if switch is not None else {"on": True}
    modules = quantisable_modules(model)
    for module in modules.values():
        if hasattr(module, "_jbert_qat"):
            continue
        device = module.weight.device
        if isinstance(module, torch.nn.Linear):
            quant = {"weight": _weight_fake_quant(per_channel).to(device), "input": _tensor_fake_quant().to(device)}
            forward = _quantised_linear_forward
        else:
            quant = {"weight": _tensor_fake_quant().to(device)}
            forward = _quantised_embedding_forward
        quant["switch"] = switch
        object.__setattr__(module, "_jbert_qat", quant)  # not a submodule: no state-dict entries
        module.forward = types.MethodType(forward, module)
    return len(modules)


def snap_weight(weight: torch.Tensor, embedding: bool, per_channel: bool = False) -> torch.Tensor:
    """WEIGHT rounded onto the int8 grid export will use (a Linear's symmetric int8, an embedding's uint8)."""
    quant = _tensor_fake_quant() if embedding else _weight_fake_quant(per_channel)
    with torch.no_grad():
        return fake_quantize(quant, weight.detach().float().cpu()).to(weight.dtype)


def snapped_state_dict(state_dict: dict, embeddings: set[str], linears: set[str], per_channel: bool = False) -> dict:
    """STATE_DICT with the named Linear and Embedding weights snapped onto their int8 grid, the rest as is."""
    snapped = dict(state_dict)
    for name in linears | embeddings:
        if name in snapped:
            snapped[name] = snap_weight(snapped[name], name in embeddings, per_channel).to(snapped[name].device)
    return snapped


def consistency_loss(logits: torch.Tensor, reference: torch.Tensor, problem_type: Optional[str]) -> torch.Tensor:
    """How far the fake-int8 LOGITS are from the fp32 REFERENCE's decisions (batch mean).

    Single-label: KL(fp32 softmax || int8 softmax); multi-label: the per-label binary KL of the
    sigmoids; regression: the squared difference. Zero exactly when int8 answers as fp32 does.
    """
    functional = torch.nn.functional
    logits, reference = logits.float(), reference.float()
    if problem_type == "regression" or logits.shape[-1] == 1:
        return ((logits - reference) ** 2).mean()
    if problem_type == "multi_label_classification":
        target = torch.sigmoid(reference)
        return (functional.binary_cross_entropy_with_logits(logits, target)
                - functional.binary_cross_entropy_with_logits(reference, target))
    return functional.kl_div(functional.log_softmax(logits, -1), functional.log_softmax(reference, -1),
                             log_target=True, reduction="batchmean")


def add_consistency(model: torch.nn.Module, switch: dict, weight: float) -> None:
    """MODEL's training forwards also run it in fp32 and add WEIGHT x consistency_loss to the loss.

    The gate export.py applies compares the int8 file with the fp32 file of the same weights, so the
    fake-int8 model is also taught the fp32 model's own answers (self-distillation): the fp32 pass
    runs without gradients, with the fake int8 off (SWITCH) and the same dropout masks (the random
    state is forked and restored, so the run draws exactly the random numbers it draws without it).
    Evaluation forwards are untouched.
    """
    original = model.forward
    problem_type = getattr(model, "problem_type", None) or getattr(model.config, "problem_type", None)

    def forward(*args, **kwargs):
        if not model.training:
            return original(*args, **kwargs)
        device = next(model.parameters()).device
        devices = [device] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices), torch.no_grad():
            switch["on"] = False
            try:
                reference = original(*args, **kwargs).logits
            finally:
                switch["on"] = True
        output = original(*args, **kwargs)
        if output.loss is not None:
            output.loss = output.loss + weight * consistency_loss(output.logits, reference.detach(), problem_type)
        return output

    model.forward = forward


class QatSchedule:
    """When QAT starts in a run, and what it changes then (the layers, the best-weights record)."""

    def __init__(self, model: torch.nn.Module, evaluator, num_epochs: int, qat_epochs: int, per_channel: bool,
                 consistency: float = 0.0):
        """MODEL: the unwrapped model; EVALUATOR: the run's (its saved weights get snapped)."""
        self.model = model
        self.consistency = consistency
        self.evaluator = evaluator
        self.start_epoch = max(0, num_epochs - qat_epochs)
        self.per_channel = per_channel
        self.active = False
        # Early stopping watches the QAT evaluations only: stopping before them would save weights
        # that never saw int8 (the from-scratch recipes turn early stopping on).
        self.patience, evaluator.patience = evaluator.patience, None
        modules = quantisable_modules(model)
        self.linears = {f"{name}.weight" for name, module in modules.items() if isinstance(module, torch.nn.Linear)}
        self.embeddings = {f"{name}.weight" for name, module in modules.items() if isinstance(module, torch.nn.Embedding)}

    def at_epoch_start(self, state) -> None:
        """Attach fake quantisation once the run reaches the QAT epochs (fresh or resumed alike)."""
        if self.active or state.epoch < self.start_epoch:
            return
        switch = {"on": True}
        count = attach(self.model, self.per_channel, switch)
        if self.consistency > 0:
            add_consistency(self.model, switch, self.consistency)
        self.evaluator.transform_weights = lambda weights: snapped_state_dict(weights, self.embeddings, self.linears,
                                                                              self.per_channel)
        self.evaluator.patience = self.patience
        self.active = True
        if state.epoch == self.start_epoch and state.batches_in_epoch == 0:
            # QAT starts now (a resumed run that is past this point kept the record it had then):
            # weights chosen before it would not be on the int8 grid, so only QAT evaluations compete.
            state.best_metric, state.best_step, state.evaluations_without_improvement = None, None, 0
        logger.info("quantisation-aware training from epoch %d: %d Linear/Embedding layers compute with fake int8 "
                    "(weights per %s, activations per batch, as export's dynamic int8)", state.epoch + 1, count,
                    "channel" if self.per_channel else "tensor")


def plan(config, accelerator, model: torch.nn.Module, evaluator, num_epochs: int) -> Optional[QatSchedule]:
    """The QAT schedule of a run with --qat (None without); MODEL is the prepared model."""
    if not config.qat:
        return None
    from accelerate.utils import DistributedType

    from jbert.core.errors import UserError

    if accelerator.distributed_type in (DistributedType.DEEPSPEED, DistributedType.FSDP):
        # Their sharded or flattened parameters are not the layers' own weights between steps.
        raise UserError(f"--qat works on one process or plain multi-process (DDP) runs, not under "
                        f"{accelerator.distributed_type.value}; launch without DeepSpeed/FSDP or drop --qat")
    return QatSchedule(accelerator.unwrap_model(model), evaluator, num_epochs, config.qat_epochs, config.qat_per_channel,
                       config.qat_consistency)
