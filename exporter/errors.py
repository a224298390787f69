"""The one exception tree of orchestra-otel.

Library errors (httpx, sqlite3, protobuf) are translated into these at the boundary
where they happen (`raise ... from`), so callers handle a handful of types and every
message is already fit for an operator's eyes: no secrets, one sentence, what to do.
"""

from __future__ import annotations


class OrchestraOtelError(Exception):
    """Base of every error this package raises on purpose."""


class ConfigError(OrchestraOtelError):
    """The configuration is invalid; `problems` holds one line per problem."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(self.problems))


class ApiError(OrchestraOtelError):
    """The Orchestra API could not give us what we asked for."""

    def __init__(self, message: str, *, endpoint: str = "", status: int | None = None) -> None:
        self.endpoint = endpoint
        self.status = status
        super().__init__(message)


class ApiAuthError(ApiError):
    """401/403: the API key is missing, wrong or lacks rights. Not retried."""


class ApiNotFoundError(ApiError):
    """404: the workflow or run does not exist (or is not visible to this key)."""


class ApiRequestError(ApiError):
    """Another 4xx: the API refused the request itself. Not retried."""


class ApiUnavailableError(ApiError):
    """Timeouts, connection failures, 429 and 5xx that outlasted the retries."""


class ApiResponseError(ApiError):
    """The API answered 2xx with a body we cannot read (not JSON, wrong shape)."""


class ApiResponseTooLargeError(ApiResponseError):
    """The answer passes a bound (bytes, records, nesting): asking again gives the same.

    ORCHESTRA_API_MAX_RESPONSE_BYTES and ORCHESTRA_API_MAX_RECORDS, or JSON nested deeper
    than it can be decoded; reading stopped at the bound. Not retried.
    """


class MappingError(OrchestraOtelError):
    """A record cannot be turned into a span; the caller logs it once and counts it."""


class ExportError(OrchestraOtelError):
    """The span sink did not confirm delivery."""


class StateError(OrchestraOtelError):
    """The SQLite ledger cannot be opened or written."""
