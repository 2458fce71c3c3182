"""One error type for everything a user can fix: the CLI prints it as one line and exits non-zero."""

from __future__ import annotations

import os

SECRET_VARIABLES = (
    "TIDB_PASSWORD",
    "SNOWFLAKE_PASSWORD",
    "SNOWSQL_PWD",
    "SNOWFLAKE_TOKEN",
    "SNOWFLAKE_PRIVATE_KEY_PASSPHRASE",
)


class EcomError(Exception):
    """A failure the user can act on: `what` went wrong, `fix` says what to do about it."""

    def __init__(self, what: str, fix: str = "") -> None:
        super().__init__(what)
        self.what = what
        self.fix = fix

    def __str__(self) -> str:
        return f"{self.what} — {self.fix}" if self.fix else self.what

    def __reduce__(self) -> tuple[type[EcomError], tuple[str, str]]:
        return type(self), (self.what, self.fix)  # whole across processes (the bench runs steps in children)


def env_secrets() -> list[str]:
    """The secrets the environment holds, for `redact`."""
    return [os.environ.get(name, "") for name in SECRET_VARIABLES]


def redact(text: str, secrets: list[str]) -> str:
    """Remove every non-empty secret from `text` (error messages from drivers may echo connection args)."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


class TransientError(EcomError):
    """A failure that may pass by itself (the server restarting, a network blip): retried before reported."""
