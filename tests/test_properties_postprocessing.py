"""Property tests: post-processing never returns NaN or a class outside id2label, for any logits.

Logits come from the model as float32 (ONNX) or float16/bfloat16 -> float32 (training on GPUs), and
a diverging or badly quantised model can put out +-inf and values near the float limits. Whatever
it puts out (NaN aside, which no working model produces), the scores must be probabilities and the
decisions valid class ids.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from conftest import examples

from jbert.core.postprocessing import predictions_from_logits, sigmoid, softmax

FLOAT_DTYPES = (np.float16, np.float32, np.float64)


@st.composite
def logit_matrices(draw, min_labels: int = 1):
    """(rows, labels) logits of any float dtype: finite values of every magnitude, +inf and -inf."""
    dtype = draw(st.sampled_from(FLOAT_DTYPES))
    rows = draw(st.integers(1, 6))
    labels = draw(st.integers(min_labels, 8))
    width = np.finfo(dtype).bits
    elements = st.one_of(
        st.floats(allow_nan=False, allow_infinity=True, width=width),
        st.sampled_from([np.inf, -np.inf, 0.0, -0.0]),
        st.floats(-30, 30, width=width),  # the range real models use, where ties and rounding matter
    )
    return draw(hnp.arrays(dtype, (rows, labels), elements=elements))


thresholds = st.one_of(st.floats(0, 1), st.sampled_from([0.0, 0.5, 1.0, np.nextafter(0, 1), np.nextafter(1, 0)]))


@settings(max_examples=examples(200))
@given(logit_matrices())
@example(np.array([[np.inf, 0.0]]))  # inf - inf = NaN in the plain shifted formula
@example(np.array([[-np.inf, -np.inf]]))  # all classes impossible: 0/0 in the plain formula
@example(np.array([[np.inf, np.inf, -np.inf]]))
@example(np.array([[1e308, -1e308]]))  # the shift overflows to -inf
@example(np.array([[65504, -65504]], dtype=np.float16))
def test_softmax_is_a_distribution(logits):
    probabilities = softmax(logits)
    assert probabilities.shape == logits.shape
    assert not np.isnan(probabilities).any(), (logits, probabilities)
    assert ((probabilities >= 0) & (probabilities <= 1)).all()
    tolerance = 1e-2 if logits.dtype == np.float16 else 1e-5
    np.testing.assert_allclose(probabilities.astype(np.float64).sum(axis=-1), 1.0, atol=tolerance)
    for row, values in zip(probabilities, logits):
        # Order kept: a larger logit never gets a smaller probability.
        order = np.argsort(values, kind="stable")
        assert (np.diff(row[order].astype(np.float64)) >= 0).all(), (values, row)
        # +inf logits share all the probability.
        if np.isposinf(values).any():
            np.testing.assert_allclose(row[np.isposinf(values)], 1 / np.isposinf(values).sum(), rtol=tolerance)
            assert (row[~np.isposinf(values)] == 0).all()


@settings(max_examples=examples(200))
@given(logit_matrices())
@example(np.array([[np.inf, -np.inf, 1e308, -1e308]]))
def test_sigmoid_is_a_probability_and_monotone(logits):
    probabilities = sigmoid(logits)
    assert probabilities.shape == logits.shape
    assert not np.isnan(probabilities).any()
    assert ((probabilities >= 0) & (probabilities <= 1)).all()
    flat_logits, flat_probabilities = logits.ravel(), probabilities.ravel()
    order = np.argsort(flat_logits, kind="stable")
    assert (np.diff(flat_probabilities[order]) >= 0).all(), "a larger logit got a smaller probability"
    assert (flat_probabilities[np.isposinf(flat_logits)] == 1).all()
    assert (flat_probabilities[np.isneginf(flat_logits)] == 0).all()


@pytest.mark.filterwarnings("ignore:invalid value encountered in logaddexp:RuntimeWarning")  # the NaN example
@settings(max_examples=examples(200))
@given(logit_matrices(), thresholds)
@example(np.array([[np.inf, -np.inf], [np.nan, 0.0]]), 0.5)  # a NaN logit still gives a valid class id
def test_decisions_are_valid_class_ids(logits, threshold):
    labels = logits.shape[1]
    single = predictions_from_logits(logits, "single_label_classification")
    assert single.shape == (len(logits),)
    assert ((single >= 0) & (single < labels)).all(), "class id outside id2label"
    finite_rows = ~np.isnan(logits).any(axis=-1)
    rows = np.arange(len(logits))[finite_rows]
    assert (logits[rows, single[finite_rows]] == logits[finite_rows].max(axis=-1)).all()

    multi = predictions_from_logits(logits, "multi_label_classification", threshold)
    assert multi.shape == logits.shape
    assert set(np.unique(multi)) <= {0, 1}
    # The rule is "sigmoid strictly above the threshold", monotone in the logit.
    np.testing.assert_array_equal(multi, (sigmoid(logits) > threshold).astype(np.int64))
    for row_logits, row_decisions in zip(logits, multi):
        chosen = row_logits[row_decisions == 1]
        rejected = row_logits[row_decisions == 0]
        if len(chosen) and len(rejected):
            assert chosen.min() >= rejected.max()
    if threshold >= 1:
        assert not multi.any(), "a probability can never be strictly above 1"


def test_unknown_problem_type_is_an_error():
    with pytest.raises(ValueError, match="unknown problem_type"):
        predictions_from_logits(np.zeros((1, 2)), "single_label")
