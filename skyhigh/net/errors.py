"""The two ways a request to a client-chosen URL fails, for callers that retry or report."""

from __future__ import annotations


class TargetRefused(Exception):
    """The URL or an address it resolves to is not allowed; retrying will not help.

    `allow_private_helps` says whether the refusal is an internal address that the caller's
    allow-private setting would open, so its message can name that setting (never for the cloud
    metadata address, which no setting opens).
    """

    def __init__(self, message: str, *, allow_private_helps: bool = False) -> None:
        super().__init__(message)
        self.allow_private_helps = allow_private_helps


class TargetUnreachable(Exception):
    """DNS or the network failed; a later attempt may succeed."""
