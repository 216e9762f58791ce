"""jbert: fine-tune Japanese BERT classifiers with Accelerate, export to ONNX, serve with onnxruntime.

The sub-packages are the stages of the flow, in the order data moves through them:

    jbert.core          what every stage shares: errors, text normalisation, file readers,
                        artifact contracts, post-processing, progress lines
    jbert.tokenization  text -> token ids, identical at training and serving time
    jbert.data          data files -> cleaned, labelled, split datasets
    jbert.train         datasets -> a model directory (Accelerate loop, checkpoints, metrics, report)
    jbert.export        model directory -> validated ONNX directory (fp32, optimised, int8)
    jbert.serve         ONNX directory -> scores: torch-free runtime, batch scoring, HTTP service

Dependencies point one way (core <- tokenization <- data <- train <- export; serve uses only core
and tokenization), and nothing under jbert.serve, jbert.tokenization or jbert.core imports torch
(tests/test_layout.py keeps it so).
"""

# The one place the version is written: pyproject.toml reads it from here (setuptools dynamic
# version), so `jbert.__version__` is right in a source checkout and in an installed copy alike.
__version__ = "0.3.0"
