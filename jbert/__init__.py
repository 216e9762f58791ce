"""jbert: fine-tune Japanese BERT classifiers with Accelerate, export to ONNX, serve with onnxruntime.

The sub-packages are the stages of the flow, in the order data moves through them:

    jbert.core    what every stage shares: errors, file readers, artifact contracts, post-processing
    jbert.text    text normalisation and tokenisation, identical at training and serving time
    jbert.data    data files -> cleaned, labelled, split datasets
    jbert.train   datasets -> a model directory (Accelerate loop, checkpoints, metrics, report)
    jbert.export  model directory -> validated ONNX directory (fp32, optimised, int8)
    jbert.serve   ONNX directory -> scores: torch-free runtime, batch scoring, HTTP service

Dependencies point one way (core <- text <- data <- train <- export; serve uses only core and
text), and nothing under jbert.serve, jbert.text or jbert.core imports torch.
"""

from jbert import _legacy

__version__ = "0.2.0"

_legacy.install()
