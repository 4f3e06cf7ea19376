"""The exercise checkers (mmulib.exercises) and the notebooks' exercises with their solutions.

The checkers are called by readers with whatever they typed, so besides getting right and wrong
answers right, they must never raise.  The second half runs each chapter with every exercise
answer cell replaced by its solution file (``notebooks/solutions/*.py``) and checks that every
checker cell then says "correct": the worked answers agree with what mmulib computes.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from mmulib import decode
from mmulib.exercises import (
    Feedback,
    check_choice,
    check_fields,
    check_number,
    check_role_word,
    check_yes_no,
)

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK_DIR = ROOT / "notebooks"
SOLUTIONS = NOTEBOOK_DIR / "solutions"

# --- the checkers ------------------------------------------------------------------------------


def test_right_role_word_in_any_spelling():
    role = decode(0x3784, "5.19")[1]
    for answer in (0x3784, "0x3784", "0x0000_3784", " 14212 ", role):
        fb = check_role_word(answer, role)
        assert fb.ok and fb.verdict == "correct", answer
        assert "0x00003784" in fb.message


def test_wrong_role_word_names_the_fields_without_giving_the_word_away():
    fb = check_role_word(0x1784, 0x3784, kernel="5.19")
    assert not fb.ok and fb.verdict == "wrong"
    assert "cr0_wp (yours: 0)" in fb.message
    assert "0x00003784" not in fb.message


def test_wrong_role_word_knows_the_layout_of_a_role():
    fb = check_role_word(0x3704, decode(0x3784, "4.18")[1])
    assert "direct" in fb.message


def test_wrong_word_without_a_layout_still_answers():
    fb = check_role_word(1, 2)
    assert not fb.ok and "0x00000001" in fb.message


@pytest.mark.parametrize("answer", [..., None, "", "   "])
def test_unanswered_exercises_say_so(answer):
    for fb in (check_role_word(answer, 1), check_yes_no(answer, True),
               check_fields(answer, {"a"}), check_number(answer, 3),
               check_choice(answer, "x", ["x", "y"])):
        assert not fb.ok and fb.verdict == "unanswered"
        assert fb.message.startswith("Not answered yet")


@pytest.mark.parametrize("answer", ["0xZZ", object(), True, [1, 2], 1 << 40, -5, 1.5])
def test_odd_role_word_answers_never_raise(answer):
    fb = check_role_word(answer, 0x3784, kernel="5.19")
    assert isinstance(fb, Feedback) and not fb.ok


def test_padding_bits_are_reported_as_invalid():
    fb = check_role_word(0x3784 | 1 << 20, 0x3784, kernel="5.19")  # bit 20 is padding in 5.19
    assert not fb.ok and "not a valid word" in fb.message


def test_a_checker_with_a_bad_expected_value_does_not_raise():
    assert not check_role_word(1, object()).ok
    assert not check_fields({"a"}, 42).ok


def test_yes_no_accepts_words_and_booleans():
    assert check_yes_no("Yes", True).ok
    assert check_yes_no(True, True).ok
    assert check_yes_no("no", False).ok
    assert check_yes_no(0, False).ok
    fb = check_yes_no("no", True, hint="Look at cr0_wp.")
    assert not fb.ok and "Look at cr0_wp." in fb.message
    assert not check_yes_no("perhaps", True).ok


def test_fields_accept_sets_lists_and_strings():
    assert check_fields({"smm", "guest_mode"}, ["guest_mode", "smm"]).ok
    assert check_fields("smm, guest_mode", {"guest_mode", "smm"}).ok
    fb = check_fields({"smm", "cr0_wp"}, {"smm", "guest_mode"})
    assert not fb.ok
    assert "1 field(s) missing" in fb.message and "not expected: cr0_wp" in fb.message
    assert "guest_mode" not in fb.message


def test_numbers_say_too_high_or_too_low():
    assert check_number("1792", 1792).ok
    assert "too high" in check_number(2000, 1792).message
    assert "too low" in check_number(10, 1792).message
    assert not check_number("many", 1792).ok


def test_choice_is_case_insensitive_and_lists_the_options():
    assert check_choice(" Reuse ", "reuse", ["reuse", "rebuild"]).ok
    assert "'reuse', 'rebuild'" in check_choice("maybe", "reuse", ["reuse", "rebuild"]).message


def test_explanations_come_with_right_answers_only():
    assert check_number(3, 3, explain="Because.").message == "Correct: 3. Because."
    assert "Because." not in check_number(4, 3, explain="Because.").message


def test_feedback_renders_in_jupyter_with_its_verdict():
    html = check_number(3, 3)._repr_html_()
    assert "data-verdict='correct'" in html and "mmulib-feedback" in html
    assert repr(check_number(3, 4)).startswith("✘")
    assert "&lt;b&gt;" in check_choice("<b>", "x", ["x"])._repr_html_()  # the message is escaped


# --- the notebooks' exercises ------------------------------------------------------------------


def _chapters() -> list[Path]:
    return [p for p in sorted(NOTEBOOK_DIR.glob("*.ipynb"))
            if any("exercise-answer" in c.get("metadata", {}).get("tags", [])
                   for c in json.loads(p.read_text())["cells"])]


def _solution_of(cell) -> Path:
    tags = [t for t in cell.metadata.get("tags", []) if t.startswith("solution:")]
    assert len(tags) == 1, f"cell {cell.get('id')}: one 'solution:<path>' tag expected"
    return NOTEBOOK_DIR / tags[0].removeprefix("solution:")


def _tagged(nb, tag):
    return [c for c in nb.cells if tag in c.metadata.get("tags", [])]


def test_chapters_01_and_02_have_exercises():
    names = {p.name for p in _chapters()}
    assert {"01-what-is-a-role.ipynb", "02-cpu-role-vs-root-role.ipynb"} <= names


@pytest.mark.parametrize("path", _chapters(), ids=lambda p: p.name)
def test_each_chapter_has_two_to_four_exercises_each_with_a_solution(path):
    nb = nbformat.read(path, as_version=4)
    answers, checks = _tagged(nb, "exercise-answer"), _tagged(nb, "exercise-check")
    assert 2 <= len(answers) <= 4
    assert len(checks) == len(answers)
    prefix = path.name[:2] + "_"
    for cell in answers:
        solution = _solution_of(cell)
        assert solution.is_file(), solution
        assert solution.name.startswith(prefix)
        name = re.match(r"(answer_\d+) = \.\.\.", cell.source).group(1)
        assert re.search(rf"^{name} = ", solution.read_text(), re.M), f"{solution} sets {name}"


def test_every_solution_file_belongs_to_an_exercise():
    used = {_solution_of(c).resolve() for p in _chapters()
            for c in _tagged(nbformat.read(p, as_version=4), "exercise-answer")}
    assert set(SOLUTIONS.glob("*.py")) <= used | {p.resolve() for p in SOLUTIONS.glob("__*")}


def _param(path: Path):
    meta = json.loads(path.read_text()).get("metadata", {}).get("mmulib", {})
    return pytest.param(path, id=path.name,
                        marks=[pytest.mark.needs_dot] if meta.get("needs_dot") else [])


@pytest.mark.parametrize("path", [_param(p) for p in _chapters()])
def test_solutions_pass_the_notebook_checks(path, this_python_kernel):
    nb = nbformat.read(path, as_version=4)
    for cell in _tagged(nb, "exercise-answer"):
        cell.source = _solution_of(cell).read_text()
    NotebookClient(nb, timeout=60, kernel_name=this_python_kernel,
                   resources={"metadata": {"path": str(NOTEBOOK_DIR)}}).execute()
    verdicts = []
    for cell in _tagged(nb, "exercise-check"):
        html = "".join(o.get("data", {}).get("text/html", "") for o in cell.outputs)
        found = re.search(r"data-verdict='(\w+)'", html)
        verdicts.append((cell.id, found.group(1) if found else f"no verdict in {cell.outputs}"))
    assert verdicts and all(v == "correct" for _, v in verdicts), verdicts
