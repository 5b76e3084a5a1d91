"""The API's errors: each carries its HTTP status and a message saying what is wrong and how to fix it."""


class ApiError(Exception):
    """An error answered as {"error": message} with a precise status."""

    status = 400

    def __init__(self, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.headers = headers or {}


class BadRequest(ApiError):
    status = 400


class Unauthorized(ApiError):
    status = 401


class NotFound(ApiError):
    status = 404


class MethodNotAllowed(ApiError):
    status = 405


class Conflict(ApiError):
    status = 409


class PayloadTooLarge(ApiError):
    status = 413


class UnsupportedMediaType(ApiError):
    status = 415


class TooManyRequests(ApiError):
    status = 429

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message, headers={"Retry-After": str(int(retry_after))})


class ServiceUnavailable(ApiError):
    """A cloud service (DynamoDB, S3, KMS) is throttling, failing or not answering: send the request again."""

    status = 503

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message, headers={"Retry-After": str(int(retry_after))})


class Forbidden(ApiError):
    status = 403
