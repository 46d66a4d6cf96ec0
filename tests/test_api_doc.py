"""docs/api.md against the code: its form table names every Form field, in the API's order, with
the Form's defaults where it states a number, and its endpoint table names every public endpoint."""
import re
from pathlib import Path

from app.ui.form import FORM, Form, REQUIRED

DOC = (Path(__file__).resolve().parent.parent / "docs" / "api.md").read_text()


def _table(heading: str) -> list[list[str]]:
    part = DOC.split(heading, 1)[1].split("\n## ", 1)[0]
    rows = [ln for ln in part.splitlines() if ln.startswith("| ") and not ln.startswith("|---")]
    return [[cell.strip() for cell in row.strip("|").split(" | ")] for row in rows[1:]]


def test_the_form_table_lists_every_field_in_order_with_its_default():
    rows = _table("## The form")
    names = [n for row in rows for n in re.findall(r"`(\w+)`", row[0])]
    assert names == list(FORM)
    defaults = Form()
    for row in rows:
        fields = re.findall(r"`(\w+)`", row[0])
        if fields[0] in REQUIRED:
            assert row[1] == "required", row
            continue
        numbers = re.findall(r"^[\d.]+(?:, [\d.]+)*$", row[1])
        if numbers:   # a numeric default, or one for each field of the row
            stated = [float(v) for v in row[1].split(", ")]
            assert stated == [float(getattr(defaults, f)) for f in fields], row


def test_the_endpoint_table_names_every_public_endpoint():
    from app.ui.layout import build_demo
    demo = build_demo("tiny-random")
    public = {fn.api_name for fn in demo.fns.values() if fn.api_name and getattr(fn, "api_visibility", "public") ==
              "public"}
    documented = {re.sub(r"[`/]", "", row[0]) for row in _table("## Endpoints")}
    assert public == documented, (public, documented)
