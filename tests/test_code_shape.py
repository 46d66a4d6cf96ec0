"""The code's shape, as the project's rules state it (docs/design.md, "Architecture"): no module of
app/ over 300 lines, and no call in app/ passing more than 8 positional arguments (a longer group
travels as a value: Request, Defence, Form, a config)."""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MAX_LINES = 300
MAX_POSITIONAL = 8


def _sources() -> list[Path]:
    return sorted((ROOT / "app").rglob("*.py"))


def test_no_module_of_the_app_is_over_300_lines():
    long = {str(p.relative_to(ROOT)): n for p in _sources() if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, long


def test_no_call_in_the_app_passes_more_than_8_positional_arguments():
    wide = []
    for path in _sources():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Call):
                positional = [a for a in node.args if not isinstance(a, ast.Starred)]
                if len(positional) > MAX_POSITIONAL:
                    wide.append(f"{path.relative_to(ROOT)}:{node.lineno} ({len(positional)})")
    assert not wide, wide



def test_every_citation_of_a_document_names_a_heading_it_has():
    """Docstrings and comments cite a document by its path under docs/ and a heading in quotes: the
    file exists and one of its headings starts with the quoted words, so a moved section breaks a
    test, not a reader."""
    import re
    cite = re.compile(r'docs/([\w-]+\.md),\s+"([^"]+)"')
    missing = []
    for path in [*_sources(), *sorted((ROOT / "tests").glob("*.py")), *sorted((ROOT / "scripts").glob("*.py"))]:
        for name, heading in cite.findall(path.read_text()):
            doc = ROOT / "docs" / name
            wanted = " ".join(heading.split())
            heads = [line.lstrip("#").strip() for line in doc.read_text().splitlines()
                     if line.startswith("#")] if doc.is_file() else []
            if not any(h.startswith(wanted) for h in heads):
                missing.append(f"{path.relative_to(ROOT)}: docs/{name}, {wanted!r}")
    assert not missing, missing
