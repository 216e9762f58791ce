"""jbert: fine-tune Japanese BERT classifiers with Accelerate, export to ONNX, serve with onnxruntime.

Stages (one module each): text/data -> tokenizer/modeling -> training -> exporting -> runtime/serving.
Modules used at serving time (text, artifacts, errors, tokenizer's fast path, runtime, batching,
scoring, serving) never import torch.
"""

__version__ = "0.1.0"
