"""The HTTP service's contract: response models and the OpenAPI document, precise enough to fuzz.

Change this file when a route's answers change: every status code a route can give is listed
with its body model, the /predict request schema carries the limits the server enforces (inputs
per request, characters per text, no blank texts, no unknown fields), and /metrics is documented
as Prometheus text. Schemathesis checks the running server against this document
(tests/test_http_fuzz.py, bench/http_fuzz.py), so a route that answers something undocumented
fails a test instead of breaking a generated client.

The request body is parsed by hand (`jbert.serve.http.request`) rather than by a pydantic model,
to keep the 400 (not JSON) / 422 (outside the schema) / 413 (too many bytes) distinction and to
refuse an oversized body before reading it all; the schema here describes what that parser accepts.
"""

from __future__ import annotations

import sys
import unicodedata
from typing import Any, Callable, Literal

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import models_json_schema

from jbert.serve.http.request import PREDICT_FIELDS, ServeLimits
from jbert.serve.http.tei import inference_api_request_schema, tei_request_schema

PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class ErrorBody(BaseModel):
    """Every non-2xx answer: what went wrong and how to fix it."""

    model_config = ConfigDict(extra="forbid")
    error: str = Field(description="What went wrong, naming the field (for example inputs[3]) and how to fix it.")
    error_type: Literal[
        "malformed_json", "malformed_request", "validation", "payload_too_large", "overloaded", "unavailable",
        "draining", "unauthorized", "not_found", "method_not_allowed", "http_error", "internal",
        "unsupported_media_type", "timeout", "backend",
    ] = Field(description="A stable machine-readable kind of error.")


class ScoredLabel(BaseModel):
    """One label with its score (the top_k list)."""

    model_config = ConfigDict(extra="forbid")
    label: str
    score: float


class Prediction(BaseModel):
    """The result for one input."""

    label: str | None = Field(description="The predicted label (for regression: the target's name, or null).")
    score: float = Field(description="Probability of `label` (softmax or sigmoid); for regression the predicted value.")
    labels: list[str] = Field(
        default_factory=list, description="Multi-label models only: every label whose probability is above the threshold."
    )
    scores: list[ScoredLabel] = Field(
        default_factory=list, description='Only when "top_k" was given: the top_k labels, best first.'
    )
    truncated: bool = Field(description="True when the text was longer than the model's max_length and was cut.")
    abstained: bool | None = Field(
        default=None, description="Only for a single-label model trained with --min_confidence/--target_precision: "
        "true when the top score is below its min_confidence; `label` is then null and `label_if_accepted` "
        "holds the best label."
    )
    label_if_accepted: str | None = Field(
        default=None, description="Only when `abstained` is true: the label the model would have answered."
    )


class Health(BaseModel):
    """GET /health while the service takes requests."""

    model_config = ConfigDict(extra="forbid")
    status: Literal["ok"]
    queue_texts: int = Field(ge=0, description="Texts accepted and not yet answered.")


class Info(BaseModel):
    """GET /info: the model served and the limits in force."""

    task: str
    labels: list[str]
    max_length: int
    is_pair: bool
    model: str
    model_file: str
    fast_tokenizer: bool
    intra_op_threads: int
    temperature: float | None = Field(None, description="Softmax temperature applied to the scores (None: raw softmax).")
    max_client_batch_size: int
    max_body_bytes: int
    max_text_chars: int
    max_batch_tokens: int
    max_wait_ms: float
    max_queue_texts: int
    auth: Literal["none", "bearer"]
    min_confidence: float | None = Field(default=None, description="Abstention threshold (single-label models that have one).")
    label_thresholds: dict[str, float] | None = Field(
        default=None, description="Per-label thresholds tuned on validation (multi-label models that have them).")


def _error(description: str, headers: dict | None = None) -> dict:
    response = {"description": description,
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}}
    if headers:
        response["headers"] = headers
    return response


_RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait before retrying.", "schema": {"type": "integer"}}}
_INTERNAL = _error("A bug in jbert (the server log has the traceback).")
_UNAUTHORIZED = _error(
    "The bearer token is missing or wrong (only when the server runs with --api-key-file).",
    {"WWW-Authenticate": {"description": 'Always "Bearer".', "schema": {"type": "string"}}},
)


def blank_characters(text_survives: Callable[[str], bool]) -> list[str]:
    """Characters that clean-up removes entirely (spaces, controls, format marks), by the model's own rule.

    Only characters that are controls, format marks or spaces, or that NFKC changes, can vanish, so
    only those (about 5,000 of 1.1 million) are asked; `text_survives(ch)` is the runtime's verdict.
    """
    blanks = []
    for code in range(sys.maxunicode + 1):
        if 0xD800 <= code <= 0xDFFF:
            continue  # surrogates are refused before clean-up (jbert.serve.http.request)
        char = chr(code)
        if (unicodedata.category(char) in ("Cc", "Cf", "Zs", "Zl", "Zp") or char.isspace()
                or unicodedata.normalize("NFKC", char) != char) and not text_survives(char):
            blanks.append(char)
    return blanks


def not_blank_pattern(blanks: list[str]) -> str:
    """A regular expression that finds one character outside `blanks` (so the text is not blank).

    BMP characters are written as \\uXXXX, which Python's re, ECMAScript and Rust's regex (the
    validators schemathesis uses) all read; astral ones literally, as no escape is common to all.
    """
    codes = sorted(ord(c) for c in blanks)
    ranges: list[list[int]] = []
    for code in codes:
        if ranges and code == ranges[-1][1] + 1:
            ranges[-1][1] = code
        else:
            ranges.append([code, code])

    def spell(code: int) -> str:
        return f"\\u{code:04X}" if code <= 0xFFFF else chr(code)

    parts = [spell(low) if low == high else f"{spell(low)}-{spell(high)}" for low, high in ranges]
    return "[^" + "".join(parts) + "]"


def text_schema(limits: ServeLimits, text_pattern: str | None) -> dict:
    """JSON Schema of one text as every route checks it: length, not blank, valid Unicode."""
    text = {"type": "string", "minLength": 1, "maxLength": limits.max_text_chars}
    if text_pattern:
        text["pattern"] = text_pattern
    text["description"] = (
        f"At most {limits.max_text_chars} characters, not blank after clean-up (spaces, control and format "
        "characters are removed), valid Unicode (no unpaired surrogates)."
    )
    return text


def predict_request_schema(limits: ServeLimits, is_pair: bool, text_pattern: str | None) -> dict:
    """JSON Schema of the /v1/predict body as `parse_predict_body` accepts it for this model."""
    text = text_schema(limits, text_pattern)
    if is_pair:
        one = {"type": "array", "items": text, "minItems": 2, "maxItems": 2, "description": "[text, text_pair]"}
    else:
        one = text
    many = {"type": "array", "items": one, "minItems": 1, "maxItems": limits.max_client_batch_size}
    first, second = (["この商品はとても良いです。", "また買いたい。"], ["最悪の料理でした。", "二度と行かない。"]) if is_pair \
        else ("この商品はとても良いです。", "最悪の料理でした。")
    return {
        "type": "object",
        "examples": [{"inputs": first}, {"inputs": [first, second], "top_k": 2, "truncate": True}],
        "required": ["inputs"],
        "additionalProperties": False,
        "properties": {
            "inputs": {"anyOf": [one, many], "description": (
                "One input (answered with one object) or a list of them (answered with a list, in order). "
                + ("This model classifies sentence pairs: an input is [text, text_pair]." if is_pair else
                   "This model classifies single texts.")
            )},
            "top_k": {"anyOf": [{"type": "integer", "minimum": 1}, {"type": "null"}],
                      "description": "Also return the top_k labels with scores (capped at the number of labels)."},
            "truncate": {"type": ["boolean", "null"], "default": True, "description": (
                "Cut texts longer than the model's max_length tokens (default); false answers such a text with 413.")},
        },
    }


def install_openapi(app: FastAPI, limits: ServeLimits, is_pair: bool, auth: bool,
                    text_pattern: Callable[[], str | None], side: str = "right") -> None:
    """Replace FastAPI's generated document with the precise one, built once on first request."""
    assert set(predict_request_schema(limits, is_pair, None)["properties"]) == set(PREDICT_FIELDS)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = build_openapi(app, limits, is_pair, auth, text_pattern(), side)
        return app.openapi_schema

    app.openapi = openapi


def build_openapi(app: FastAPI, limits: ServeLimits, is_pair: bool, auth: bool, text_pattern: str | None,
                  side: str = "right") -> dict:
    """The OpenAPI 3.1 document of the service: every route, every status code, every body."""
    document = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    _, definitions = models_json_schema(
        [(model, "serialization") for model in (ErrorBody, Prediction, Health, Info)],
        ref_template="#/components/schemas/{model}",
    )
    schemas = definitions.get("$defs", {})
    schemas["PredictRequest"] = predict_request_schema(limits, is_pair, text_pattern)
    text = text_schema(limits, text_pattern)
    schemas["TeiPredictRequest"] = tei_request_schema(text, limits, is_pair, side)
    schemas["InferenceApiRequest"] = inference_api_request_schema(text, limits, is_pair)
    components = document.setdefault("components", {})
    components["schemas"] = schemas
    prediction = {"$ref": "#/components/schemas/Prediction"}
    json_body = lambda schema: {"content": {"application/json": {"schema": schema}}}  # noqa: E731
    label_scores = {"type": "array", "items": {"$ref": "#/components/schemas/ScoredLabel"}}
    unsupported = _error("The POST has no Content-Type: application/json (charset utf-8 if any).")
    tei_errors = {
        "400": _error("The body is empty, not UTF-8 or not JSON."),
        "413": _error(f"Too many inputs (over {limits.max_client_batch_size}), or the body is over max_body_bytes "
                      f"({limits.max_body_bytes})."),
        "415": unsupported,
        "422": _error("The JSON is outside the request schema, or a text is longer than the model's max_length "
                      "tokens while truncate is false."),
        "424": _error("The model failed on this request's batch (error_type backend)."),
        "429": _error("The queue is full (error_type overloaded): retry after Retry-After seconds.", _RETRY_AFTER),
        "503": _error("Draining for shutdown (error_type draining), or every connection is busy (overloaded).",
                      _RETRY_AFTER),
        "500": _INTERNAL,
    }
    responses = {
        ("/predict", "post"): {
            "200": {"description": "text-embeddings-inference's answer: for one input a list of {label, score}, "
                                   "every label, best first; for a batch one such list per input, in order.",
                    **json_body({"anyOf": [label_scores, {"type": "array", "items": label_scores}]})},
            **tei_errors,
        },
        ("/", "post"): {
            "200": {"description": "The Inference API's answer: one list of {label, score} per input (best first), "
                                   "also for one text.", **json_body({"type": "array", "items": label_scores})},
            **tei_errors,
        },
        ("/v1/predict", "post"): {
            "200": {"description": "One result for one input, a list of results (in input order) for a list.",
                    **json_body({"anyOf": [prediction, {"type": "array", "items": prediction}]})},
            "400": _error("The body is empty, not UTF-8 or not JSON."),
            "413": _error(f"The body is over max_body_bytes ({limits.max_body_bytes}), or a text is longer than "
                          "the model's max_length tokens while truncate is false."),
            "415": unsupported,
            "422": _error("The JSON is outside the request schema: wrong types, unknown fields, no inputs, too many "
                          "inputs, a too long, blank or invalid text."),
            "503": _error("The queue is full (error_type overloaded) or the server is draining for shutdown "
                          "(error_type draining): retry after Retry-After seconds, on another replica if draining.",
                          _RETRY_AFTER),
            "500": _INTERNAL,
        },
        ("/health", "get"): {
            "200": {"description": "Ready: the model is loaded and requests are taken.",
                    **json_body({"$ref": "#/components/schemas/Health"})},
            "503": _error("Not ready: draining for shutdown (error_type draining); take it out of rotation.",
                          _RETRY_AFTER),
            "500": _INTERNAL,
        },
        ("/info", "get"): {
            "200": {"description": "The model served and the limits in force.",
                    **json_body({"$ref": "#/components/schemas/Info"})},
            "500": _INTERNAL,
        },
        ("/metrics", "get"): {
            "200": {"description": "Prometheus text exposition (version 0.0.4).",
                    "content": {"text/plain": {"schema": {"type": "string"}}}},
            "500": _INTERNAL,
        },
    }
    for (path, method), answers in responses.items():
        operation = document["paths"][path][method]
        operation["responses"] = answers
        body_schema = {"/predict": "TeiPredictRequest", "/": "InferenceApiRequest", "/v1/predict": "PredictRequest"}
        if path in body_schema:
            operation["requestBody"] = {"required": True,
                                        **json_body({"$ref": f"#/components/schemas/{body_schema[path]}"})}
        if auth and path != "/health":
            operation["security"] = [{"bearer": []}]
            answers["401"] = _UNAUTHORIZED
    if auth:
        components["securitySchemes"] = {"bearer": {
            "type": "http", "scheme": "bearer",
            "description": "The token in the server's --api-key-file: `Authorization: Bearer <token>`.",
        }}
    return document
