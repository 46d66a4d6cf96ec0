"""Hugging Face Space glue: front matter, spaces before torch, @spaces.GPU or a no-op."""
import ast
import importlib
import sys
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_readme_front_matter_makes_a_gradio_space():
    head = (ROOT / "README.md").read_text().split("---")[1]
    fields = dict(line.split(": ", 1) for line in head.strip().splitlines())
    assert fields["sdk"] == "gradio" and fields["app_file"] == "app.py"
    major, minor, _ = (int(p) for p in fields["sdk_version"].split("."))
    assert (major, minor) >= (6, 20)
    import gradio
    assert tuple(int(p) for p in gradio.__version__.split(".")[:2]) >= (6, 20)   # what CI installed


def test_app_py_imports_spaces_before_anything_that_imports_torch():
    tree = ast.parse((ROOT / "app.py").read_text())
    imports = sorted((n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))), key=lambda n: n.lineno)
    first = imports[0]
    assert isinstance(first, ast.Import) and first.names[0].name == "spaces"
    assert all(n.lineno > first.lineno for n in imports[1:])


def test_gpu_decorator_uses_spaces_when_present(monkeypatch):
    calls = []
    fake = types.ModuleType("spaces")
    fake.GPU = lambda duration: (calls.append(duration), lambda fn: ("wrapped", fn))[1]
    monkeypatch.setitem(sys.modules, "spaces", fake)
    import app.hosting
    hosting = importlib.reload(app.hosting)
    try:
        assert hosting.gpu(duration=42)(len) == ("wrapped", len) and calls == [42]
    finally:
        monkeypatch.delitem(sys.modules, "spaces")
        hosting = importlib.reload(app.hosting)
    assert hosting.spaces is None and hosting.gpu(duration=42)(len) is len
