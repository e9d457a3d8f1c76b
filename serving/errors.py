"""Errors of the scoring service; each carries the HTTP status (and gRPC code) it maps to."""

from __future__ import annotations

from collections.abc import Sequence

from featurelib.errors import FeaturelibError


class ServingError(FeaturelibError):
    """Base of the scoring service's errors; `status` is the HTTP status a request gets."""

    status = 500
    grpc_code = "INTERNAL"


class BadRequestError(ServingError):
    """The request is malformed: a missing or mistyped field, an unknown column, bad JSON."""

    status = 400
    grpc_code = "INVALID_ARGUMENT"


class PayloadTooLargeError(ServingError):
    """The request body is larger than the configured limit."""

    status = 413
    grpc_code = "RESOURCE_EXHAUSTED"


class UnauthorizedError(ServingError):
    """No valid bearer token was given."""

    status = 401
    grpc_code = "UNAUTHENTICATED"


class ForbiddenError(ServingError):
    """The bearer token is valid but lacks the role this endpoint needs."""

    status = 403
    grpc_code = "PERMISSION_DENIED"


class ModelNotFoundError(ServingError):
    """No registered model, version or alias has the requested name."""

    status = 404
    grpc_code = "NOT_FOUND"


class RegistryError(ServingError):
    """The model registry refused an operation (unknown name, immutable version, bad alias)."""

    status = 400
    grpc_code = "FAILED_PRECONDITION"


class PromotionRefusedError(RegistryError):
    """A promotion gate refused to move an alias; the message lists every failed gate."""

    status = 409


class FeatureStoreUnavailableError(ServingError):
    """The online store did not answer within the request deadline."""

    status = 503
    grpc_code = "UNAVAILABLE"


class ModelInputError(BadRequestError):
    """The features given to a model lack a column it needs or have an unusable type."""


class ArtifactIntegrityError(RegistryError):
    """A stored model artifact does not match the sha256 recorded when it was registered."""

    status = 500
    grpc_code = "DATA_LOSS"


class ServeConfigError(ServingError):
    """The scoring service's configuration (YAML file, flags or environment) is invalid."""


class ModelNotReadyError(ServingError):
    """The model is registered but no version of it can answer yet (or its alias is unset)."""

    status = 503
    grpc_code = "UNAVAILABLE"


class GatesFailedError(PromotionRefusedError):
    """Promotion gates refused a version; `results` holds every gate's outcome."""

    def __init__(self, what: str, *, results: Sequence[object], hint: str | None = None) -> None:
        super().__init__(what, hint=hint)
        self.results = tuple(results)


class FeatureNotFoundError(ServingError):
    """A feature service, feature view or feature named in a request does not exist."""

    status = 404
    grpc_code = "NOT_FOUND"


class RegistryUnavailableError(ServingError):
    """The model registry's database cannot be reached."""

    status = 503
    grpc_code = "UNAVAILABLE"
