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
    # The Space runs sdk_version; the tests run the installed gradio: they must be the same.
    assert fields["sdk_version"].strip() == gradio.__version__


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


def test_app_py_serves_with_the_registrys_spaces_package(tmp_path):
    """app.py imports the real `spaces` first (as on a Space, outside ZeroGPU) and still serves the page.
    `spaces` goes to a temporary folder, never into the project's environment."""
    import os
    import subprocess
    import time
    import urllib.request

    import pytest

    from tests.conftest import free_port
    target = tmp_path / "site"
    pip = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(target),
                          "spaces"], capture_output=True, text=True, timeout=120)
    if pip.returncode != 0:
        pytest.skip(f"could not install `spaces` from the registry (offline?): {pip.stderr.strip()[-200:]}")
    port = free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(target), str(ROOT)]), "CLIPURE_MODEL": "tiny-random",
           "GRADIO_SERVER_PORT": str(port), "GRADIO_SERVER_NAME": "127.0.0.1", "HF_HUB_OFFLINE": "1"}
    code = ("import runpy, sys; import spaces; print('spaces', spaces.__file__, flush=True); "
            "runpy.run_path('app.py', run_name='__main__')")
    log = tmp_path / "app.log"   # a file, not a pipe: a full pipe would block the server
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=env, stdout=log.open("w"),
                            stderr=subprocess.STDOUT, text=True)
    try:
        deadline, page = time.monotonic() + 120, None
        while time.monotonic() < deadline and proc.poll() is None and page is None:
            try:
                page = urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5).read().decode()
            except OSError:
                time.sleep(1)
        if page is None:
            pytest.fail(f"app.py with `spaces` did not serve within 120 s:\n{log.read_text()[-2000:]}")
        assert "gradio" in page.lower()
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=30)
    assert f"spaces {target}" in log.read_text()   # the registry's package, not a stub
