"""What a client's request asks for, checked before anything is queued.

Everything here refuses with `Refusal` (status, metrics reason, a message naming the problem),
so the queue never holds a request that cannot be served: a wrong content type (415; curl's
default form type is read as JSON, as Triton reads it), KServe's
binary tensor extension (415: the worker forwards JSON tensors only), a body over the limit
(413), malformed JSON (400, where it breaks), a body that is not a JSON object (400), the
OpenAI body's `model` or `stream` of the wrong type (400 naming the field), and a bad
X-Priority or X-Request-Timeout header (400 naming the header).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from multidict import CIMultiDictProxy

from gateway.answers import Api, Refusal
from gateway.contract import DEFAULT_PRIORITY, PRIORITIES

PRIORITY_HEADER = "X-Priority"
TIMEOUT_HEADER = "X-Request-Timeout"
BINARY_HEADER = "Inference-Header-Content-Length"
CURL_DEFAULT = "application/x-www-form-urlencoded"
MAX_TIMEOUT_S = 86_400.0

# Not forwarded to the engine: hop-by-hop (RFC 9110 7.6.1), the gateway's own, and what the
# worker sets itself for its own connection (length, encoding, host).
_NOT_FORWARDED = frozenset(
    h.lower()
    for h in (
        "Connection",
        "Keep-Alive",
        "Proxy-Connection",
        "Proxy-Authenticate",
        "Proxy-Authorization",
        "TE",
        "Trailer",
        "Transfer-Encoding",
        "Upgrade",
        "Host",
        "Content-Length",
        "Content-Type",
        "Accept-Encoding",
        "Expect",
        PRIORITY_HEADER,
        TIMEOUT_HEADER,
    )
)


def check_head(headers: CIMultiDictProxy[str], content_length: int | None, limit: int) -> str:
    """The content type to forward ("application/json" when absent); refuses early what the
    head alone already shows cannot be served."""
    if BINARY_HEADER in headers:
        raise Refusal(
            415,
            "binary_tensors",
            f"the binary tensor extension ({BINARY_HEADER}) is not relayed by the gateway: "
            "send the tensors as JSON",
        )
    content_type = headers.get("Content-Type", "").strip()
    mime = content_type.split(";", 1)[0].strip().lower()
    if mime == CURL_DEFAULT:
        # What `curl -d` sends unless told otherwise; Triton reads such a body as JSON, and
        # so does the gateway (the body is still checked to be JSON).
        content_type = mime = ""
    if mime and mime != "application/json" and not mime.endswith("+json"):
        raise Refusal(
            415,
            "content_type",
            f"Content-Type {content_type!r} is not served: send application/json",
        )
    if content_length is not None and content_length > limit:
        raise Refusal(413, "too_large", too_large(limit))
    return content_type or "application/json"


def too_large(limit: int) -> str:
    """The refusal message of a body over `limit` bytes."""
    return f"request body is over the gateway's limit of {limit} bytes"


def parse_json(api: Api, body: bytes) -> dict[str, Any]:
    """The request body as a JSON object; a 400 Refusal if it is not one."""
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError is a ValueError
        raise Refusal(400, "bad_json", f"failed to parse the request JSON: {exc}") from None
    if not isinstance(document, dict):
        raise Refusal(400, "bad_json", "the request body must be a JSON object")
    return document


def openai_fields(document: Mapping[str, Any]) -> tuple[str, bool]:
    """The OpenAI body's model and stream flag."""
    model = document.get("model")
    if not isinstance(model, str) or not model:
        raise Refusal(
            400,
            "bad_json",
            'you must provide a model parameter: "model" must be a non-empty string',
            param="model",
        )
    stream = document.get("stream", False)
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise Refusal(
            400,
            "bad_json",
            f'"stream" = {json.dumps(stream)}, must be true or false',
            param="stream",
        )
    return model, stream


def priority_of(headers: CIMultiDictProxy[str]) -> str:
    """The request's priority header, or the default; a 400 Refusal if unknown."""
    raw = headers.get(PRIORITY_HEADER)
    if raw is None:
        return DEFAULT_PRIORITY
    value = raw.strip().lower()
    if value not in PRIORITIES:
        raise Refusal(
            400,
            "bad_header",
            f"header {PRIORITY_HEADER} = {raw[:40]!r}, must be one of {', '.join(PRIORITIES)}",
        )
    return value


def timeout_of(headers: CIMultiDictProxy[str]) -> float | None:
    """Seconds the client gives the request, or None: the target's default."""
    raw = headers.get(TIMEOUT_HEADER)
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and 0 < value <= MAX_TIMEOUT_S):
        raise Refusal(
            400,
            "bad_header",
            f"header {TIMEOUT_HEADER} = {raw[:40]!r}, must be seconds in (0; {MAX_TIMEOUT_S:g}]",
        )
    return value


def forwarded_headers(headers: CIMultiDictProxy[str]) -> str:
    """The headers the engine gets, as the JSON object the stream entry carries."""
    return json.dumps({k: v for k, v in headers.items() if k.lower() not in _NOT_FORWARDED})
