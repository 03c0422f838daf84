"""Errors a user can act on. The CLI prints them as one line and exits with code 2."""

from __future__ import annotations


class RepolmError(Exception):
    """Bad input or an unusable environment: `message` says what is wrong, `hint` what to do."""

    exit_code = 2

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} — {self.hint}" if self.hint else self.message


class ConfigError(RepolmError):
    """An invalid, unknown or misspelled configuration value."""


class GitError(RepolmError):
    """The repository cannot be read the way repolm needs."""


class StageFailed(RepolmError):
    """One or more pipeline stages failed; details are in the manifest and the logs."""

    exit_code = 1
