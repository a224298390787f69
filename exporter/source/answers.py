"""One API answer judged: its status and its body, turned into JSON or into our errors.

Part of the client's one error boundary (exporter/source/client.py): the transport
(transport.py) hands over an answer whose body it has already read within the byte cap,
and gets back the decoded JSON or one of the exceptions of exporter/errors.py.
"""

from __future__ import annotations

import json

import httpx

from exporter.errors import (
    ApiAuthError,
    ApiError,
    ApiNotFoundError,
    ApiRequestError,
    ApiResponseError,
    ApiResponseTooLargeError,
    ApiUnavailableError,
)
from exporter.logs import REDACTED
from exporter.source.body import decode_json
from exporter.source.pause import RetryAfterGate
from exporter.source.retry import is_retryable_status
from exporter.source.stats import ClientStats


class AnswerCheck:
    """Judges answers: counts each one's outcome once and raises what it means.

    A 429 or 5xx becomes ApiUnavailableError (retryable) after `gate` took its
    Retry-After; 401/403, 404 and other 4xx their own errors, quoting the API's short
    detail with the key redacted (the API may echo the token back). A body that is not
    JSON, holds more than `max_records` records or nests too deep is refused. Nothing
    raised or counted here carries the key. Used by ApiTransport for every answer.
    """

    def __init__(
        self, api_key: str, max_records: int, stats: ClientStats, gate: RetryAfterGate
    ) -> None:
        self.api_key = api_key  # replaced on key rotation, for redaction
        self._max_records = max_records
        self._stats = stats
        self._gate = gate

    def check_status(self, endpoint: str, response: httpx.Response, raw: bytearray) -> None:
        """Return for a 2xx answer; otherwise count it and raise what its status means."""
        status = response.status_code
        if 200 <= status < 300:
            return
        self._stats.count(endpoint, str(status))
        if status == 429 or is_retryable_status(status):
            self._gate.pause_for(endpoint, response)
            raise ApiUnavailableError(
                f"{endpoint}: the API answered {status}", endpoint=endpoint, status=status
            )
        error_class: type[ApiError] = ApiRequestError
        if status in (401, 403):
            error_class = ApiAuthError
        elif status == 404:
            error_class = ApiNotFoundError
        raise error_class(
            f"{endpoint}: the API answered {status}{self._redacted(_detail(raw))}",
            endpoint=endpoint,
            status=status,
        )

    def decode(self, endpoint: str, response: httpx.Response, raw: bytearray) -> object:
        """The body of a 2xx answer as JSON, counted; raises when it cannot be read."""
        status = response.status_code
        decoded = decode_json(raw, self._max_records)
        if decoded.problem is None:
            self._stats.count(endpoint, str(status))
            return decoded.value
        if decoded.problem == "too_many_records":
            self._stats.count(endpoint, "too_large")
            raise ApiResponseTooLargeError(
                f"{endpoint}: the API's answer is too large (more than {self._max_records} "
                "records, ORCHESTRA_API_MAX_RECORDS); not read further",
                endpoint=endpoint,
                status=status,
            )
        if decoded.problem == "too_deep":
            self._stats.count(endpoint, "too_deep")
            raise ApiResponseTooLargeError(
                f"{endpoint}: the API's answer is nested too deeply to be read",
                endpoint=endpoint,
                status=status,
            )
        self._stats.count(endpoint, str(status))
        raise ApiResponseError(
            f"{endpoint}: the API answered {status} with a body that is not JSON "
            f"({response.headers.get('content-type', 'no content type')}; {decoded.detail})",
            endpoint=endpoint,
            status=status,
        )

    def _redacted(self, text: str) -> str:
        """The API may quote the token back in its error text; errors must never hold it."""
        key = self.api_key
        return text.replace(key, REDACTED) if len(key) >= 4 else text


def _detail(raw: bytes | bytearray) -> str:
    """The API's own short explanation, if it sent a JSON one ({"detail": ...})."""
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):
        return ""
    if isinstance(body, dict):
        detail = body.get("detail") or body.get("message") or body.get("error")
        if isinstance(detail, str) and detail:
            return f": {detail[:200]}"
    return ""
