"""The one error hierarchy: every error says what was wrong, where, and how to fix it."""

from __future__ import annotations


class FeaturelibError(Exception):
    """Base class of every error featurelib raises on purpose."""

    def __init__(self, what: str, *, where: str | None = None, hint: str | None = None) -> None:
        self.what = what
        self.where = where
        self.hint = hint
        message = f"{where}: {what}" if where else what
        if hint:
            message += f"\n  hint: {hint}"
        super().__init__(message)


class DefinitionError(FeaturelibError):
    """A feature definition is invalid (raised when the definition is built)."""


class UnknownColumnError(DefinitionError):
    """An expression names a column or feature that its inputs do not have."""


class ExpressionTypeError(DefinitionError):
    """An expression applies an operator to operands of the wrong type."""


class AggregateInRowExpressionError(DefinitionError):
    """An aggregate such as `fl.sum(...)` was used where a row expression is required."""


class WindowError(DefinitionError):
    """A window or hop is invalid (for example a window that is not a multiple of its hop)."""


class DuplicateNameError(DefinitionError):
    """Two features (or definitions of one kind) share a name."""


class SpecError(FeaturelibError):
    """A JSON spec cannot be turned back into a definition."""


class RepoError(FeaturelibError):
    """A feature repository cannot be loaded or a name in it cannot be resolved."""


class SourceError(FeaturelibError):
    """A data source cannot be read or lacks what its definition promises."""


class SpineError(FeaturelibError):
    """A spine (entity rows + timestamps) given to `training_set` is unusable."""
