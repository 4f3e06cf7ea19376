"""Checkers for the notebooks' exercises: a friendly verdict, never an exception.

A notebook asks the reader to predict something ("which role word will 5.19 compute?",
"will the root survive?"), lets them type an answer into a variable, and calls one of
these checkers with the answer and the value mmulib computed.  Every checker returns a
:class:`Feedback` and never raises, whatever the reader typed: a wrong type, a typo or an
exercise left as ``...`` gets a sentence saying what to do, not a traceback.

A wrong role word is answered with the *fields* that differ, so the reader gets a hint
without being handed the answer.

>>> check_role_word(0x3784, 0x3784).ok
True
>>> print(check_role_word("0x3704", 0x3784, kernel="5.19"))
Not yet: 0x00003704 differs in 1 field: direct (yours: 0). Try again or see the solution.
>>> print(check_yes_no(..., True))
Not answered yet: replace the ... with your answer (yes or no), then run the cell again.

The module is pure Python: it imports nothing from Jupyter, and notebooks display a
:class:`Feedback` through its ``_repr_html_`` method.
"""

from __future__ import annotations

import html
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

__all__ = [
    "Feedback",
    "check_role_word",
    "check_yes_no",
    "check_choice",
    "check_fields",
    "check_number",
]

_AGAIN = "Try again or see the solution."
_YES = {"yes", "y", "true", "1", "survives", "reuse", "reused", "kept"}
_NO = {"no", "n", "false", "0", "dies", "rebuilt", "dropped", "freed"}


@dataclass(frozen=True)
class Feedback:
    """The verdict on one answer: ``ok`` and one or two sentences for the reader."""

    ok: bool
    message: str
    answered: bool = True

    def __bool__(self) -> bool:
        return self.ok

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        mark = "✔" if self.ok else ("…" if not self.answered else "✘")
        return f"{mark} {self.message}"

    @property
    def verdict(self) -> str:
        """``"correct"``, ``"wrong"`` or ``"unanswered"`` (also in the HTML, for tests)."""
        if self.ok:
            return "correct"
        return "wrong" if self.answered else "unanswered"

    def _repr_html_(self) -> str:
        colour = {"correct": "#1b7f3b", "wrong": "#b3261e", "unanswered": "#6b6b6b"}[self.verdict]
        mark = {"correct": "✔", "wrong": "✘", "unanswered": "…"}[self.verdict]
        return (
            f"<div class='mmulib-feedback' data-verdict='{self.verdict}' "
            f"style='border-left:4px solid {colour};padding:4px 8px;color:{colour}'>"
            f"{mark} {html.escape(self.message)}</div>"
        )


def _unanswered(what: str) -> Feedback:
    return Feedback(
        False, f"Not answered yet: replace the ... with your answer ({what}), "
        "then run the cell again.", answered=False)


def _is_unanswered(answer: Any) -> bool:
    return answer is ... or answer is None or (isinstance(answer, str) and not answer.strip())


def _as_word(value: Any) -> int:
    """An int, a decimal or 0x-hex string, or anything with a ``.word`` (a Role)."""
    if hasattr(value, "word"):
        value = value.word
    if isinstance(value, bool):
        raise ValueError("a role word is a number, not True/False")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        return int(value.strip().replace("_", ""), 0)
    raise ValueError(f"a role word is a number such as 0x3784, not {type(value).__name__}")


def _with(text: str, explain: str) -> str:
    return f"{text} {explain}".strip() if explain else text


def check_role_word(answer: Any, expected: Any, *, kernel: str | None = None,
                    explain: str = "") -> Feedback:
    """Is ``answer`` the page-role word ``expected`` (an int or a ``Role``)?

    With ``kernel`` (or when ``expected`` is a ``Role``, which knows its layout) a wrong
    answer is told which fields differ, by name, without giving the word away.
    """
    try:
        if _is_unanswered(answer):
            return _unanswered("a role word such as 0x3784")
        try:
            got = _as_word(answer)
        except ValueError as exc:
            return Feedback(False, f"Could not read {answer!r} as a role word: {exc}.")
        want = _as_word(expected)
        if got == want:
            return Feedback(True, _with(f"Correct: {want:#010x}.", explain))
        if not 0 <= got < 1 << 32:
            return Feedback(False, f"Not yet: {got:#x} does not fit in 32 bits; a page role "
                                   "is a u32.")
        layout = getattr(expected, "layout", None)
        if layout is None and kernel is not None:
            from .roles import decode

            layout = decode(want, kernel)[1].layout
        if layout is None:
            return Feedback(False, f"Not yet: {got:#010x} is not it. " + _AGAIN)
        return Feedback(False, _field_hint(layout, got, want))
    except Exception as exc:  # a checker must never break the notebook
        return Feedback(False, f"Could not check this answer ({type(exc).__name__}: {exc}).")


def _field_hint(layout: Any, got: int, want: int) -> str:
    try:
        layout.check_word(got)
    except Exception as exc:  # e.g. a padding bit set
        return f"Not yet: you said {got:#010x}, which is not a valid word here: {exc}."
    names = [f.name for f in layout.named_fields if layout.get(got, f.name) != layout.get(want,
                                                                                          f.name)]
    shown = ", ".join(f"{n} (yours: {layout.get(got, n)})" for n in names)
    plural = "field" if len(names) == 1 else "fields"
    return f"Not yet: {got:#010x} differs in {len(names)} {plural}: {shown}. {_AGAIN}"


def _as_bool(answer: Any) -> bool:
    if isinstance(answer, bool):
        return answer
    if isinstance(answer, int) and answer in (0, 1):
        return bool(answer)
    if isinstance(answer, str) and answer.strip().lower() in _YES | _NO:
        return answer.strip().lower() in _YES
    raise ValueError(f"answer yes or no (or True/False), not {answer!r}")


def check_yes_no(answer: Any, expected: bool, *, explain: str = "", hint: str = "") -> Feedback:
    """A yes/no question ("will the root survive?"); accepts True/False and yes/no.

    ``hint`` is shown with a wrong answer; ``explain`` with a right one.
    """
    try:
        if _is_unanswered(answer):
            return _unanswered("yes or no")
        try:
            got = _as_bool(answer)
        except ValueError as exc:
            return Feedback(False, f"Could not read your answer: {exc}.")
        word = "yes" if expected else "no"
        if got == bool(expected):
            return Feedback(True, _with(f"Correct: {word}.", explain))
        return Feedback(False, _with("Not yet.", hint) + " " + _AGAIN)
    except Exception as exc:
        return Feedback(False, f"Could not check this answer ({type(exc).__name__}: {exc}).")


def check_choice(answer: Any, expected: str, choices: Iterable[str], *,
                 explain: str = "") -> Feedback:
    """One of a few named options (case and surrounding spaces ignored)."""
    try:
        options = [str(c) for c in choices]
        listed = ", ".join(repr(c) for c in options)
        if _is_unanswered(answer):
            return _unanswered(f"one of {listed}")
        got = str(answer).strip().lower()
        lowered = {c.lower(): c for c in options}
        if got not in lowered:
            return Feedback(False, f"{answer!r} is not one of the options: {listed}.")
        if lowered[got] == expected:
            return Feedback(True, _with(f"Correct: {expected}.", explain))
        return Feedback(False, f"Not yet: not {lowered[got]!r}. " + _AGAIN)
    except Exception as exc:
        return Feedback(False, f"Could not check this answer ({type(exc).__name__}: {exc}).")


def _names(value: Any) -> set[str]:
    if isinstance(value, str):
        parts = value.replace(",", " ").split()
    else:
        parts = [str(v) for v in value]
    return {p.strip() for p in parts if p.strip()}


def check_fields(answer: Any, expected: Iterable[str], *, explain: str = "") -> Feedback:
    """A set of field names ("which fields differ?"); a set, list or "a, b" string."""
    try:
        if _is_unanswered(answer):
            return _unanswered("field names such as {'cr0_wp', 'efer_nx'}")
        try:
            got = _names(answer)
        except TypeError:
            return Feedback(False, f"Could not read {answer!r}: give a set of field names.")
        want = _names(expected)
        if got == want:
            shown = ", ".join(sorted(want)) or "(none)"
            return Feedback(True, _with(f"Correct: {shown}.", explain))
        missing, extra = len(want - got), sorted(got - want)
        parts = []
        if missing:
            parts.append(f"{missing} field(s) missing")
        if extra:
            parts.append(f"not expected: {', '.join(extra)}")
        return Feedback(False, f"Not yet: {'; '.join(parts)}. " + _AGAIN)
    except Exception as exc:
        return Feedback(False, f"Could not check this answer ({type(exc).__name__}: {exc}).")


def check_number(answer: Any, expected: int, *, explain: str = "") -> Feedback:
    """A whole number (a count of states, a level)."""
    try:
        if _is_unanswered(answer):
            return _unanswered("a number")
        try:
            got = _as_word(answer)
        except ValueError as exc:
            return Feedback(False, f"Could not read {answer!r} as a number: {exc}.")
        if got == expected:
            return Feedback(True, _with(f"Correct: {expected}.", explain))
        hint = "too high" if got > expected else "too low"
        return Feedback(False, f"Not yet: {got} is {hint}. " + _AGAIN)
    except Exception as exc:
        return Feedback(False, f"Could not check this answer ({type(exc).__name__}: {exc}).")
