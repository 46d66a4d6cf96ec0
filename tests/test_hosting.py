"""Hugging Face Space glue: front matter, spaces before torch, @spaces.GPU or a no-op."""
import ast
import importlib
import sys
import types
from pathlib import Path

import pytest

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
    import app.ui.hosting   # first (app.ui's modules decorate their endpoints on import), then the fake
    monkeypatch.setitem(sys.modules, "spaces", fake)
    try:
        hosting = importlib.reload(app.ui.hosting)
        tag, fn = hosting.gpu(duration=42)(len)
        assert tag == "wrapped" and fn.__wrapped__ is len and calls == [42]   # spaces gets fn, outputs to the host
        monkeypatch.setitem(sys.modules, "spaces", None)   # not installed: `import spaces` raises ImportError
        hosting = importlib.reload(app.ui.hosting)
        assert hosting.spaces is None and hosting.gpu(duration=42)(len).__wrapped__ is len
        assert hosting.gpu(duration=42)(len)([1, 2]) == 2
    finally:
        monkeypatch.undo()                                  # back to this environment's `spaces`, or none
        importlib.reload(app.ui.hosting)


def _listening_on_all_interfaces(port: int) -> bool:
    """Whether a socket listens on 0.0.0.0:port (Linux's /proc/net/tcp: local address, state 0A = LISTEN)."""
    rows = Path("/proc/net/tcp").read_text().splitlines()[1:]
    return any(r.split()[1] == f"00000000:{port:04X}" and r.split()[3] == "0A" for r in rows)


# About 50 s (app.py started in a fresh process, a ViT-B-32 written and loaded). Its fast ones: the
# import order and the decorator above, the warm start below, and tests/test_app_e2e.py's launched app.
@pytest.mark.slow
def test_the_space_rehearsal_serves_the_default_backbone(tmp_path):
    """As on a Space: SPACE_ID set, the registry's `spaces` imported first, HF_HUB_OFFLINE=1 and a
    Hugging Face cache holding the default backbone's real layout (random weights at the real
    shapes). `python app.py` serves that backbone with no fallback notice, on 0.0.0.0, warm, and
    answers /run through gradio_client. `spaces` is the release requirements-dev.txt installs."""
    import os
    import subprocess
    import time
    import urllib.request

    from gradio_client import Client, handle_file

    from tests.conftest import free_port
    from tests.test_layouts import hub_file, random_clip, save_weights
    spaces = pytest.importorskip("spaces", reason="`spaces` is not installed: requirements-dev.txt installs it "
                                                  "(pip install -r requirements-dev.txt)")
    DEFAULT_BACKBONE = "ViT-B-32-quickgelu/openai"   # the registry's default (CLIPURE_BACKBONE unset below)
    home = tmp_path / "hf"
    save_weights(hub_file(home, "timm/vit_base_patch32_clip_224.openai", "open_clip_model.safetensors"),
                 random_clip("ViT-B-32-quickgelu"))
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("CLIPURE_BACKBONE", "GRADIO_SERVER_NAME", "HF_HUB_CACHE")}
    env.update(PYTHONPATH=os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]),
               SPACE_ID="clipure/explorer", HF_HOME=str(home),
               HF_HUB_OFFLINE="1", GRADIO_SERVER_PORT=str(port), CLIPURE_DEVICE="cpu")
    code = ("import runpy, sys; import spaces; print('spaces', spaces.__file__, flush=True); "
            "runpy.run_path('app.py', run_name='__main__')")
    log = tmp_path / "app.log"   # a file, not a pipe: a full pipe would block the server
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=env, stdout=log.open("w"),
                            stderr=subprocess.STDOUT, text=True)
    try:
        deadline, page = time.monotonic() + 180, None
        while time.monotonic() < deadline and proc.poll() is None and page is None:
            try:
                page = urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5).read().decode()
            except OSError:
                time.sleep(1)
        if page is None:
            pytest.fail(f"app.py did not serve within 180 s:\n{log.read_text()[-2000:]}")
        assert _listening_on_all_interfaces(port), "a Space listens on 0.0.0.0"
        config = urllib.request.urlopen(f"http://127.0.0.1:{port}/config", timeout=10).read().decode()
        assert "fallback-notice" not in config and DEFAULT_BACKBONE in config
        client = Client(f"http://127.0.0.1:{port}/", verbose=False, download_files=False)
        values = dict(image=handle_file(str(ROOT / "assets" / "examples" / "cat.png")), classnames="cat, dog, car",
                      backbone=DEFAULT_BACKBONE, template_set="single", attack="PGD", threat_model="adaptive", eps=4,
                      steps=1, step_size=0, seed=0, targeted=False, target=None, defence="clipure-cos", purify_steps=2,
                      purify_step_size=30.0, momentum=0.0, norm="l2", grad_scope="sample", precision="fp32", purify_seed=0, eot=1)
        from app.ui.form import FORM, Form
        result, _ = client.predict(*[{**Form().values, **values}[n] for n in FORM], api_name="/run")
        assert result["status"].startswith("**Done in"), result["status"]
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=30)
    text = log.read_text()
    assert f"spaces {spaces.__file__}" in text              # the registry's package, not a stub
    assert f"[clipure] warm: {DEFAULT_BACKBONE}" in text and "could not be loaded" not in text


# --- ZeroGPU's conventions: a warm start, and values that travel back from a GPU worker ----------

def _tensors(value, seen=None):
    """Every torch.Tensor reachable from value through containers, dataclasses and object attributes."""
    import dataclasses

    import torch
    seen = set() if seen is None else seen
    if id(value) in seen:
        return []
    seen.add(id(value))
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, dict):
        items = list(value.values())
    elif isinstance(value, (list, tuple, set)):
        items = list(value)
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        items = [getattr(value, f.name) for f in dataclasses.fields(value)]
    else:
        return []
    return [t for v in items for t in _tensors(v, seen)]


def _endpoint_values():
    """Every value each GPU-decorated endpoint returns or yields on a small request (streams whole)."""
    from app.ui import audit_panel as ap
    from app.ui import callbacks as cb
    from tests.test_callbacks import values
    from app.ui import form as fm
    small = dict(threat_model="official", steps=2)
    calls = {
        "run_demo": lambda: cb.run_demo(*values()),
        "compare_demo": lambda: cb.compare_demo(*values()),
        "classify_api": lambda: cb.classify_api(*values(fm.COMMON + fm.PRECISION)),
        "attack_api": lambda: cb.attack_api(*values()),
        "purify_api": lambda: cb.purify_api(*values(fm.PURIFY_API)),
        "audit_demo": lambda: ap.audit_demo(*values(**small)),
        "audit_api": lambda: ap.audit_api(*values(**small)),
    }
    return {name: list(call()) for name, call in calls.items()}


def test_every_gpu_endpoint_yields_values_that_pickle_and_hold_only_host_tensors():
    """On ZeroGPU each value a decorated function returns or yields is pickled back to the main
    process, which has no GPU: it must pickle, and every tensor in it must be detached on the CPU."""
    import pickle
    out = _endpoint_values()
    assert set(out) == {"run_demo", "compare_demo", "classify_api", "attack_api", "purify_api", "audit_demo",
                        "audit_api"}
    for name, updates in out.items():
        assert updates, name
        for value in updates:
            pickle.loads(pickle.dumps(value))
            for t in _tensors(value):
                assert t.device.type == "cpu" and not t.requires_grad and t.grad_fn is None, name
    final = dict(zip(__import__("app.ui.form", fromlist=["RUN_OUTPUTS"]).RUN_OUTPUTS, out["run_demo"][-1]))
    assert _tensors(final["result_state"]), "the run's result travels with its tensors (the replay needs them)"


def test_to_host_reaches_every_tensor_of_a_pipeline_result():
    """to_host moves each tensor inside a PipelineResult (here to the meta device, so that a
    missed one shows on a CPU-only machine) and leaves the original as it was."""
    from app.attacks import AttackConfig
    from app.ui.hosting import to_host
    from app.flows.pipeline import run_pipeline
    from app.views.presets import EXAMPLES_DIR
    r = run_pipeline(EXAMPLES_DIR / "cat.png", "cat, dog, car", AttackConfig(attack="PGD", eps=4, steps=1),
                     backbone="tiny-random", template_set="single")
    before = _tensors(r)
    moved = to_host(r, device="meta")
    assert len(_tensors(moved)) == len(before) >= 8
    assert all(t.device.type == "meta" for t in _tensors(moved))
    assert all(t.device.type == "cpu" for t in _tensors(r))
    assert to_host((1, "a", [None])) == (1, "a", [None])


def test_user_errors_sit_inside_the_gpu_call():
    """A gr.Error raised in a ZeroGPU worker reaches the visitor; any other exception becomes
    "ZeroGPU worker error". So each decorated endpoint turns engine errors into gr.Error inside."""
    import inspect

    from app.ui import audit_panel, callbacks
    for module in (callbacks, audit_panel):
        source = inspect.getsource(module)
        assert "@user_errors\n@gpu" not in source
        assert source.count("@gpu(") >= 2
        for block in source.split("@gpu(")[1:]:
            assert block.split("\n", 1)[1].startswith("@user_errors"), block[:120]


@pytest.fixture
def cold_process(monkeypatch):
    """This process's backbone and text caches emptied for the test, and restored after it."""
    import app.clip.models as models
    from app.clip.zeroshot import TEXT_CACHE
    saved = (dict(models._CACHE), set(models._PINNED), TEXT_CACHE._store.copy(), set(TEXT_CACHE._pinned))
    models._CACHE.clear()
    TEXT_CACHE._store.clear()
    yield
    models._CACHE.clear()
    models._CACHE.update(saved[0])
    models._PINNED.clear()
    models._PINNED.update(saved[1])
    TEXT_CACHE._store.clear()
    TEXT_CACHE._store.update(saved[2])
    TEXT_CACHE._pinned.clear()
    TEXT_CACHE._pinned.update(saved[3])


def test_after_the_warm_start_a_request_loads_nothing(cold_process, monkeypatch):
    """The server's start loads the default backbone, the bundled one and the lessons' settings and
    fills the text cache; then, with every loader made to fail, the default request and each lesson
    still answer. A backbone that is not warm says so in the request's progress."""
    import open_clip

    import app.clip.models
    import app.defences.priors
    import app.clip.zeroshot
    from app.ui import callbacks as cb
    from app.ui import form as fm
    from app.ui.layout import warm_items
    from app.flows.warm import warm_start
    from tests.test_callbacks import values
    warmed = warm_start(warm_items("tiny-random"))
    assert {(w.item.backbone, w.item.precision) for w in warmed} >= {("tiny-random", None), ("toy-shapes", "fp32"),
                                                                    ("toy-shapes", "fp16")}

    def refuse(*a, **k):
        raise AssertionError("a request loaded something from disk")
    monkeypatch.setattr(app.clip.models, "_create", refuse)
    monkeypatch.setattr(open_clip, "create_model_and_transforms", refuse)
    monkeypatch.setattr(app.clip.zeroshot, "_encode_prompts", refuse)
    monkeypatch.setattr(app.defences.priors, "_load_bundled", refuse)
    monkeypatch.setattr(app.defences.priors, "_load_laion", refuse)

    from app.views.presets import LESSONS, default_classnames
    from app.defences import PurifyConfig
    from app.attacks.threat_models import offered
    start = values(classnames=default_classnames("tiny-random"), backbone="tiny-random", template_set="single")
    updates = list(cb.run_demo(*start))
    final = dict(zip(fm.RUN_OUTPUTS, updates[-1]))
    assert final["status"].startswith("**Done in"), final["status"]
    statuses = " ".join(str(dict(zip(fm.RUN_OUTPUTS, u))["status"]) for u in updates)
    assert "not loaded at start" not in statuses
    for lesson in LESSONS:
        form = values(**{**lesson.settings, "steps": 2})
        if lesson.action == "compare":
            table, _ = list(cb.compare_demo(*form))[-1]
            # one row for each threat model the lesson's defence has (TTC has no official one)
            assert len(table["data"]) == len(offered(PurifyConfig(defence=lesson.settings["defence"])))
        else:
            assert dict(zip(fm.RUN_OUTPUTS, list(cb.run_demo(*form))[-1]))["status"].startswith("**Done in")
    # a backbone that is not warm: loaded in the request (here it cannot be), with a message saying so
    from app.flows.request import Request, preparing_message
    assert preparing_message(Request(None, "", "tiny-random")) == "Encoding the class names"
    assert "not loaded at start" in preparing_message(Request(None, "", "toy-shapes", precision="bf16"))
    monkeypatch.undo()
    cold = list(cb.run_demo(*values(backbone="toy-shapes", precision="bf16", classnames="red circle, blue square")))
    assert "not loaded at start" in str(dict(zip(fm.RUN_OUTPUTS, cold[0]))["status"])
