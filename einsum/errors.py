"""The one exception family of attnscope.

Every error a user can cause derives from :class:`AttnscopeError`; its message names the place at fault
(line and caret, file and dotted key, tensor and rank) and what would be valid. The CLI prints the message
and exits with status 2; it never shows a traceback for these.
"""

from __future__ import annotations

from dataclasses import dataclass


class AttnscopeError(Exception):
    """Root of all user-facing errors."""


@dataclass(frozen=True)
class Span:
    """A region of Einsum source text: 1-based line, 0-based column range [col, end_col) on that line."""

    line: int
    col: int
    end_col: int

    def caret(self, source: str) -> str:
        """The offending source line with carets under this span."""
        lines = source.splitlines() or [""]
        text = lines[self.line - 1] if 0 < self.line <= len(lines) else ""
        col, width = self.col, max(1, self.end_col - self.col)
        if len(text) > CARET_WIDTH:  # a window of a long line around the span, its cuts marked
            start = max(0, min(col - CARET_WIDTH // 4, len(text) - CARET_WIDTH))
            text = (
                ("..." if start else "") + text[start : start + CARET_WIDTH] + "..." * (start + CARET_WIDTH < len(text))
            )
            col = col - start + (3 if start else 0)
            width = min(width, CARET_WIDTH - (col - (3 if start else 0)))
        return f"    {text}\n    {' ' * col}{'^' * max(1, width)}"


CARET_WIDTH = 160
"""Characters of a source line an error shows around its span."""


class LocatedError(AttnscopeError):
    """An error at a place in Einsum text; the message shows ``origin:line:col``, the line and a caret."""

    def __init__(self, message: str, source: str | None = None, span: Span | None = None, origin: str = "<einsum>"):
        self.reason = message
        self.source = source
        self.span = span
        self.origin = origin
        if source is None or span is None:
            super().__init__(f"{origin}: {message}")
        else:
            super().__init__(f"{origin}:{span.line}:{span.col + 1}: {message}\n{span.caret(source)}")


class EinsumSyntaxError(LocatedError):
    """Malformed Einsum text: the message carries line, column, a caret and what was expected."""


class CascadeError(LocatedError):
    """A well-formed cascade that is inconsistent (undefined tensor, rank conflict, undeclared cycle)."""


class ShapeError(AttnscopeError):
    """Rank sizes or array shapes that do not fit a cascade."""


class RegistryError(AttnscopeError):
    """A name that is not registered; the message lists the registered names."""


class SpecError(AttnscopeError):
    """A hardware, mapping or sweep specification that fails validation (names file and dotted key)."""


class StoreError(AttnscopeError):
    """A results store that cannot be used: not SQLite, not attnscope's, another schema version, unreadable."""
