"""The runtime room: an export directory -> predictions, with onnxruntime and no torch, no HTTP.

    classifier    OnnxClassifier: composes the parts below and jbert.core.postprocessing
    batch_inputs  texts -> padded int64 arrays: normalise and tokenize as training did, bucket by length
    session       onnxruntime session options, threads per physical core, loading
    cpu           which int8 instruction sets this CPU has (export's target, serving's warning)

Both the HTTP service (`jbert.serve.http`) and the batch scorer (`jbert.serve.scoring`) run the
export through this room; it imports neither of them.
"""

# The runtime's public entry point, imported by export, the tests and users' own code.
from jbert.serve.runtime.batch_inputs import DEFAULT_MAX_TEXT_CHARS, MAX_TEXT_CHARS_LIMIT, InputError
from jbert.serve.runtime.classifier import OnnxClassifier

__all__ = ["OnnxClassifier", "InputError", "DEFAULT_MAX_TEXT_CHARS", "MAX_TEXT_CHARS_LIMIT"]
