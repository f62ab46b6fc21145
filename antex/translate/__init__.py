"""Pure translation between the OpenAI wire formats and Anthropic Messages.

Nothing here does I/O or knows the server: routes hand in request dicts and upstream SSE events
and write out what comes back. `chat` speaks Chat Completions, `responses` the Responses API as
Codex CLI uses it; the modules they share are named after the piece they build.
"""

from __future__ import annotations


class TranslationError(ValueError):
    """A request that cannot be translated; rendered as a 400 `invalid_request_error`.

    `param` names the offending field the way OpenAI's error `param` does (`messages[2].content`).
    """

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
