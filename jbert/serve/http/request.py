"""Reading and validating a request body: media type, size, JSON, fields, limits (no FastAPI routes here).

A client's mistake becomes a `ClientError` with the HTTP status and a message saying what to fix.
The statuses follow the OpenAPI schema (`jbert.serve.http.schema`): a POST whose Content-Type is
not application/json is 415 (a web page can send text/plain or no type at all to a local server
without a CORS preflight; refusing them stops such cross-site calls); a body that is not JSON
(including JSON that Python cannot read: thousands of nested brackets, a 5,000-digit number,
bytes that are not UTF-8) is 400; a JSON body outside the schema of /v1/predict (wrong types,
unknown fields, empty or too many inputs, a too long or blank text) is 422; 413 is kept for
what a schema cannot state: the body's size in bytes (and, in the route, a text over the
model's max_length tokens with "truncate": false). The TEI routes (`jbert.serve.http.tei`) reuse
the reading and the text checks with TEI's statuses.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse
from starlette.requests import ClientDisconnect

from jbert.core.errors import UserError
from jbert.core.safe_input import JsonInputError, parse_json
# The runtime's limits, one for every caller: MeCab crashes the process from about 192,000 ASCII characters.
from jbert.serve.runtime.batch_inputs import DEFAULT_MAX_TEXT_CHARS, MAX_TEXT_CHARS_LIMIT

PREDICT_FIELDS = ("inputs", "top_k", "truncate")


@dataclass
class ServeLimits:
    """What one request may ask for (beyond the body size: 413; beyond the others: 422)."""

    max_client_batch_size: int = 64  # inputs per request
    max_body_bytes: int = 2 * 1024 * 1024  # request body size
    max_top_k: int | None = None  # None: as many as the model has labels
    max_text_chars: int = DEFAULT_MAX_TEXT_CHARS  # characters per text (or text_pair), before clean-up

    def validate(self) -> None:
        """Raise UserError for limits that make no sense."""
        problems = []
        if self.max_client_batch_size < 1:
            problems.append(f"max_client_batch_size must be at least 1, got {self.max_client_batch_size}")
        if self.max_body_bytes < 64:
            problems.append(f"max_body_bytes must be at least 64, got {self.max_body_bytes}")
        if not 1 <= self.max_text_chars <= MAX_TEXT_CHARS_LIMIT:
            problems.append(f"max_text_chars must be between 1 and {MAX_TEXT_CHARS_LIMIT:,} (longer texts crash the "
                            f"tokenizer's native code), got {self.max_text_chars}")
        if problems:
            raise UserError("invalid request limits: " + "; ".join(problems))

    def __post_init__(self):
        # Checked where they are made, once: the app takes its limits as valid.
        self.validate()


class ClientError(Exception):
    """A client's mistake (or a refusal such as 503), answered with `status` and a JSON error body."""

    def __init__(self, status: int, error_type: str, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status = status
        self.error_type = error_type
        self.message = message
        self.headers = headers or {}


def error_response(status: int, error_type: str, message: str, headers: dict | None = None) -> JSONResponse:
    """The JSON error body every non-2xx answer carries: {"error": ..., "error_type": ...}."""
    return JSONResponse({"error": message, "error_type": error_type}, status_code=status, headers=headers)


def check_json_content_type(request: Request) -> None:
    """415 unless the request says Content-Type: application/json (parameters such as charset=utf-8 allowed)."""
    content_type = request.headers.get("content-type")
    media_type, _, parameters = (content_type or "").partition(";")
    charset = next((value.strip().strip('"').lower() for name, _, value in
                    (part.partition("=") for part in parameters.split(";")) if name.strip().lower() == "charset"), "utf-8")
    if media_type.strip().lower() != "application/json" or charset not in ("utf-8", "utf8"):
        got = f"Content-Type {content_type!r}" if content_type else "no Content-Type"
        raise ClientError(415, "unsupported_media_type",
                          f"send the body as JSON with Content-Type: application/json (got {got})")


async def read_body(request: Request, max_body_bytes: int) -> bytes:
    """The request body, refusing (413) more than `max_body_bytes` without reading it all.

    The Content-Type is checked first (415 unless application/json).
    """
    check_json_content_type(request)
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            declared_bytes = int(declared)
        except ValueError:
            raise ClientError(400, "malformed_request", "Content-Length is not a number") from None
        if declared_bytes > max_body_bytes:
            raise ClientError(413, "payload_too_large", f"body of {declared_bytes} bytes exceeds the limit of {max_body_bytes} bytes")
    chunks, size = [], 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_body_bytes:  # chunked uploads have no Content-Length to check up front
                raise ClientError(413, "payload_too_large", f"body exceeds the limit of {max_body_bytes} bytes")
            chunks.append(chunk)
    except ClientDisconnect:
        # The client left, or the read deadline (jbert.serve.http.protocol) cut it off: nobody reads this answer.
        raise ClientError(408, "timeout", "the connection closed before the whole body arrived") from None
    return b"".join(chunks)


def parse_body_json(body: bytes) -> Any:
    """The JSON value of a body; ClientError 400 for an empty body or anything `parse_json` refuses."""
    if not body.strip():
        raise ClientError(400, "malformed_json", 'empty body; send JSON like {"inputs": ["テキスト"]}')
    try:
        return parse_json(body, "body")
    except JsonInputError as err:
        raise ClientError(400, "malformed_json", str(err)) from None


@dataclass
class PredictRequest:
    """A validated /predict body."""

    texts: list[str]
    text_pairs: list[str] | None
    top_k: int | None
    truncate: bool
    single: bool  # "inputs" was one string (or one pair): answer with one object, not a list


def body_fields(payload: Any, accepted: tuple[str, ...], example: str) -> dict:
    """The body as a JSON object with only `accepted` fields and "inputs"; ClientError 422 saying what to fix."""
    if not isinstance(payload, dict):
        raise ClientError(422, "validation", f"body must be a JSON object like {example}, got {json_type(payload)}")
    unknown = sorted(set(payload) - set(accepted))
    if unknown:
        raise ClientError(422, "validation", f"unknown fields {unknown}; accepted: {list(accepted)}")
    if "inputs" not in payload:
        raise ClientError(422, "validation", f'"inputs" is required, as in {example}')
    return payload


def parse_predict_body(body: bytes, is_pair: bool, num_labels: int, limits: ServeLimits) -> PredictRequest:
    """Validate a /v1/predict body; raise ClientError with the status and a message saying what to fix."""
    payload = body_fields(parse_body_json(body), PREDICT_FIELDS, '{"inputs": ["テキスト"]}')

    top_k = payload.get("top_k")
    if top_k is not None:
        # JSON has one number type: 2.0 is the integer 2 (as JSON Schema counts it), 2.5 is not.
        if isinstance(top_k, float) and top_k.is_integer():
            top_k = int(top_k)
        if isinstance(top_k, bool) or not isinstance(top_k, int):
            raise ClientError(422, "validation", f'"top_k" must be a positive integer or null, got {json_type(top_k)}')
        if top_k < 1:
            raise ClientError(422, "validation", f'"top_k" must be at least 1, got {top_k}')
        top_k = min(top_k, limits.max_top_k or num_labels, num_labels)
    truncate = payload.get("truncate", True)
    if truncate is None:
        truncate = True
    if not isinstance(truncate, bool):
        raise ClientError(422, "validation", f'"truncate" must be true or false, got {json_type(truncate)}')

    inputs = payload["inputs"]
    single = isinstance(inputs, str) or (is_pair and is_text_pair(inputs))
    items = [inputs] if single else inputs
    if not isinstance(items, list):
        raise ClientError(422, "validation", f'"inputs" must be a string or a list, got {json_type(inputs)}')
    if not items:
        raise ClientError(422, "validation", '"inputs" is empty; send at least one text')
    if len(items) > limits.max_client_batch_size:
        raise ClientError(
            422, "validation",
            f'"inputs" has {len(items)} items; at most {limits.max_client_batch_size} per request: split it into several requests',
        )
    texts, pairs = [], [] if is_pair else None
    for index, item in enumerate(items):
        if is_pair:
            if not is_text_pair(item):
                raise ClientError(
                    422, "validation",
                    f"inputs[{index}]: this model classifies sentence pairs; send [text, text_pair] (two strings), got {json_type(item)}",
                )
            texts.append(checked_text(item[0], f"inputs[{index}][0]", limits))
            pairs.append(checked_text(item[1], f"inputs[{index}][1]", limits))
        else:
            if not isinstance(item, str):
                hint = " (this model classifies single texts, not pairs)" if is_text_pair(item) else ""
                raise ClientError(422, "validation", f"inputs[{index}] must be a string, got {json_type(item)}{hint}")
            texts.append(checked_text(item, f"inputs[{index}]", limits))
    return PredictRequest(texts, pairs, top_k, truncate, single)


def checked_text(text: str, where: str, limits: ServeLimits) -> str:
    """`text` if it is within the length limit and is real Unicode text; ClientError (422) otherwise."""
    if len(text) > limits.max_text_chars:
        raise ClientError(
            422, "validation", f"{where} has {len(text)} characters; at most {limits.max_text_chars} per text"
        )
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        # JSON's "\ud800" escapes decode to lone surrogates, which are not text: the tokenizer
        # (MeCab) cannot encode them and would fail as a server error.
        raise ClientError(
            422, "validation",
            f"{where} holds an unpaired UTF-16 surrogate ({text[err.start]!r} at character {err.start}); send valid Unicode text",
        ) from None
    return text


def is_text_pair(value: Any) -> bool:
    """True for [str, str]."""
    return isinstance(value, list) and len(value) == 2 and all(isinstance(v, str) for v in value)


def json_type(value: Any) -> str:
    """How a JSON value is called in messages: 'an object', 'a string', ..."""
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null",
            int: "a number", float: "a number"}.get(type(value), type(value).__name__)
