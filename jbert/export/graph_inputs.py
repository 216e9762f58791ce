"""Which inputs an ONNX graph takes: the names the parity check feeds, the manifest records and serving builds.

Optimum's ONNX config of each architecture decides the graph's inputs: BERT, ELECTRA and DeBERTa
with token type embeddings take `token_type_ids`; ModernBERT, RoBERTa, XLM-RoBERTa and DeBERTa-v3
(type_vocab_size 0) do not. A tokenizer may still return token_type_ids (export asks for them, and
BERT-style templates give the second text type 1): those are never fed to a graph without the
input. Whether that is safe is not assumed: PyTorch gets every tokenizer output, as in training,
and the parity check compares it with the graph that got only its own inputs.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from jbert.serve.runtime.session import FEEDABLE_INPUTS, REQUIRED_INPUTS


def graph_input_names(session, order: Sequence[str] = ()) -> list[str]:
    """The graph's input names: those named in ORDER first, in that order, then the rest in the graph's."""
    names = [node.name for node in session.get_inputs()]
    return [name for name in order if name in names] + [name for name in names if name not in order]


def check_graph_inputs(session, model_file: str) -> list[str]:
    """Problems with a graph's inputs: a required one missing, one serving cannot build, a fixed axis."""
    problems = []
    inputs = {node.name: node for node in session.get_inputs()}
    missing = [name for name in REQUIRED_INPUTS if name not in inputs]
    if missing:
        problems.append(f"{model_file} has no input {', '.join(missing)} (inputs: {sorted(inputs)})")
    unknown = [name for name in inputs if name not in FEEDABLE_INPUTS]
    if unknown:
        problems.append(f"{model_file} takes inputs {unknown} that jbert's runtime does not build "
                        f"(it builds {list(FEEDABLE_INPUTS)})")
    for name, node in inputs.items():
        fixed = [dim for dim in node.shape if not isinstance(dim, str)]
        if fixed:
            problems.append(f"{model_file} input {name} has fixed dimensions {node.shape}; batch and sequence axes must be dynamic")
    return problems


def feeds_for(names: Sequence[str], encoded: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The arrays of ENCODED the graph takes, and only those."""
    return {name: encoded[name] for name in names}


def dropped_inputs(names: Sequence[str], encoded: Mapping[str, np.ndarray]) -> dict[str, bool]:
    """Tokenizer outputs the graph does not take -> whether any of their values is non-zero.

    A dropped all-zero token_type_ids is what the model would use anyway; a non-zero one is worth
    naming when the parity check fails.
    """
    return {name: bool(np.any(values)) for name, values in encoded.items() if name not in names}
