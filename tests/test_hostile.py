"""A hostile client against a launched server (issue 12): bad inputs through every endpoint,
oversized and smuggled bodies, cancels, and concurrent clients. Each answer is one sentence,
never Gradio's generic error, and the server keeps serving."""
import base64
import io
import json
import os
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

gradio_client = pytest.importorskip("gradio_client")
from gradio_client import Client, handle_file  # noqa: E402

from app.views.presets import EXAMPLES_DIR  # noqa: E402
from app.ui.server import BodyLimit, bind_address, sweep  # noqa: E402

CLASSES = "cat, dog, car, plane"
GENERIC = "upstream Gradio app has raised an exception"
# A light request, by FORM name; the positional API follows app/ui/form.FORM.
DEFAULTS = dict(image=None, classnames=CLASSES, backbone="tiny-random", template_set="single", attack="PGD",
                threat_model="undefended", eps=8, steps=3, step_size=0, seed=0, targeted=False, target=None,
                defence="clipure-cos", purify_steps=4, purify_step_size=30.0, momentum=0.0, norm="l2", grad_scope="sample",
                precision="fp32", purify_seed=0, eot=1)


@pytest.fixture(scope="module")
def client(server):
    return Client(server, verbose=False)


@pytest.fixture(scope="module")
def good():
    return handle_file(str(EXAMPLES_DIR / "cat.png"))


def form(image, **over) -> list:
    from app.ui.form import FORM, Form
    values = {**Form().values, **DEFAULTS, "image": image, **over}   # each defence's own parameters: defaults
    return [values[f] for f in FORM]


# Wall-clock bounds here tell a quick answer from a stuck or queued one; they are not benchmarks
# (docs/measurements.md has the figures). Measured on the 2-core VM at load 6: the long-text refusal
# 0.4 s; a cancelled worker stopped in 0.3-0.4 s and the next request was answered 1.0-1.7 s after
# the cancel; the over-budget refusal 1.2 s. The heavy request below, uncancelled, holds the worker
# about 25 s idle and 46 s at load 6. So: 10 s to refuse or to stop, 15 s for the next answer, about
# 10x the loaded figures and still well under the heavy request's run, which a cancel must cut short.
# (The long text's "characters" sentence comes from the length check, which runs before any
# tokenizing; its bound only catches a hang.)
REFUSE_S, STOP_S, ANSWER_S = 10, 10, 15


def one_sentence(text: str) -> None:
    """Not Gradio's generic error, and one sentence: no sentence break inside ('. ' before a capital)."""
    import re
    assert GENERIC not in text and "Traceback" not in text, text
    assert not re.search(r"[.!?] [A-Z]", text) and len(text) < 400, text


def refused(client, args, api) -> str:
    with pytest.raises(Exception) as info:
        client.predict(*args, api_name=api)
    one_sentence(str(info.value))
    return str(info.value)


# --- the bad-input set ------------------------------------------------------------------------

def _png(**save) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (40, 40), (200, 30, 30)).save(buf, "PNG", **save)
    return buf.getvalue()


def _bomb() -> bytes:
    buf = io.BytesIO()
    Image.new("1", (20000, 20000)).save(buf, "PNG")   # 400 megapixels in about 50 KB
    return buf.getvalue()


def _thin() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (1, 100000)).save(buf, "PNG")    # 1x100000: its resize alone would need about 20 GB
    return buf.getvalue()


BAD_FILES = {
    "truncated": (lambda: _png()[:50], "corrupt or truncated"),
    "text-as-png": (lambda: b"just some text, saved as .png", "not an image"),
    "empty": (lambda: b"", "not an image"),
    "decompression-bomb": (_bomb, "too large to decode|megapixel"),
    "huge-icc-profile": (lambda: _png(icc_profile=os.urandom(3_000_000)), "metadata is too large"),
    "thin": (_thin, "crop it closer to a square"),
}


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad")
    out = {}
    for name, (make, match) in BAD_FILES.items():
        (d / f"{name}.png").write_bytes(make())
        out[name] = (handle_file(str(d / f"{name}.png")), match)
    return out


@pytest.mark.parametrize("api", ["/classify", "/run", "/attack", "/purify", "/compare"])
def test_bad_images_get_one_sentence_on_every_endpoint(client, bad_files, api):
    for name, (image, match) in bad_files.items():
        args = {"/classify": [image, CLASSES, "tiny-random", "single"],
                "/purify": [image, CLASSES, "tiny-random", "single", "clipure-cos", 4, 30.0, 0.0, "l2", "sample"]
                }.get(api, form(image))
        t = time.perf_counter()
        text = refused(client, args, api)
        assert __import__("re").search(match, text), (name, text)
        assert time.perf_counter() - t < 5, name          # the thin image is refused before any resize


@pytest.mark.parametrize("field, name", [("eps", "L-inf eps"), ("steps", "Attack steps"),
                                         ("purify_steps", "Purification steps"), ("momentum", "Momentum"),
                                         ("seed", "Seed"), ("purify_step_size", "Purification step size")])
@pytest.mark.parametrize("value", [None, ""])
def test_missing_numbers_get_one_sentence_naming_the_field(client, good, field, name, value):
    for api in ("/attack", "/run"):
        assert f"{name} is missing" in refused(client, form(good, **{field: value}), api)


@pytest.mark.parametrize("field, name", [("eps", "L-inf eps"), ("steps", "Attack steps"),
                                         ("purify_steps", "Purification steps"), ("momentum", "Momentum"),
                                         ("seed", "Seed")])
def test_nan_over_raw_http_gets_one_sentence(server, field, name):
    # gradio_client cannot send NaN (strict JSON); a raw client can, and Python's JSON parser takes it.
    import httpx
    with open(EXAMPLES_DIR / "cat.png", "rb") as f:
        path = httpx.post(f"{server}gradio_api/upload", files={"files": ("cat.png", f, "image/png")}).json()[0]
    values = form({"path": path, "meta": {"_type": "gradio.FileData"}}, **{field: float("nan")})
    text = _call_raw(server, "attack", json.dumps({"data": values}))   # json.dumps writes NaN
    one_sentence(text)
    assert name in text and "NaN" in text, text


@pytest.mark.parametrize("field", ["backbone", "template_set", "attack", "threat_model", "defence", "norm",
                                   "grad_scope"])
def test_unknown_names_get_one_sentence(client, good, field):
    assert "nope" in refused(client, form(good, **{field: "nope"}), "/attack")


def test_long_class_text_is_refused_at_once(client, good):
    text = ", ".join(["word " * 600] * 5)            # 3,000 words, 15,000 characters
    t = time.perf_counter()
    assert "characters" in refused(client, [good, text, "tiny-random", "single"], "/classify")
    assert time.perf_counter() - t < REFUSE_S


# --- bodies -----------------------------------------------------------------------------------

def _call_raw(server: str, api: str, body) -> str:
    """POST a call as a raw client would; return the error text (or the result) it reads back."""
    req = urllib.request.Request(f"{server}gradio_api/call/{api}", data=body if isinstance(body, bytes)
                                 else body.encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        event = json.loads(r.read())["event_id"]
    with urllib.request.urlopen(f"{server}gradio_api/call/{api}/{event}", timeout=60) as r:
        lines = r.read().decode().splitlines()
    data = [json.loads(x[len("data: "):]) for x in lines if x.startswith("data: ")]
    return json.dumps(data[-1]) if data else ""


def test_a_data_url_in_the_json_body_is_refused(server):
    big = io.BytesIO()
    Image.fromarray((np.random.RandomState(0).rand(700, 700, 3) * 255).astype(np.uint8)).save(big, "PNG")
    url = "data:image/png;base64," + base64.b64encode(big.getvalue()).decode()   # ~2 MB inside the JSON
    body = json.dumps({"data": [{"path": None, "url": url, "meta": {"_type": "gradio.FileData"}},
                                CLASSES, "tiny-random", "single"]})
    with pytest.raises(urllib.error.HTTPError) as info:
        _call_raw(server, "classify", body)
    assert info.value.code == 413
    message = json.loads(info.value.read())["error"]
    one_sentence(message)
    assert "1 MB limit" in message and "upload" in message


def test_a_body_without_content_length_is_cut_at_the_limit():
    import asyncio
    sent, seen = [], []

    async def app(scope, receive, send):
        seen.append(await receive())

    async def receive():
        return {"type": "http.request", "body": b"x" * 300_000, "more_body": True}   # never ends

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "path": "/gradio_api/queue/join", "headers": []}
    asyncio.run(BodyLimit(app)(scope, receive, send))
    assert sent[0]["status"] == 413 and not seen


# --- cancel and concurrency -------------------------------------------------------------------

def test_cancel_frees_the_worker_for_the_next_request(server, good):
    heavy = form(good, threat_model="adaptive", steps=200, purify_steps=200)   # about 25 s uncancelled
    job = Client(server, verbose=False).submit(*heavy, api_name="/run_stream")
    time.sleep(2)                                   # the attack is under way
    t = time.perf_counter()
    job.cancel()
    while any(x.name == "clipure-attack" for x in threading.enumerate()) and time.perf_counter() - t < STOP_S:
        time.sleep(0.05)
    stopped = time.perf_counter() - t
    out = Client(server, verbose=False).predict(good, CLASSES, "tiny-random", "single", api_name="/classify")
    assert out["label"] in out["classnames"]
    assert stopped < STOP_S and time.perf_counter() - t < ANSWER_S, stopped   # stopped; the next one is served


@pytest.mark.parametrize("api, thread", [("/compare", "clipure-compare_demo"), ("/attack", "clipure-attack_api")])
def test_cancel_also_frees_the_worker_on_the_other_endpoints(server, good, api, thread):
    """Endpoints that return one value are streams underneath (form.cancellable), so they stop too."""
    heavy = form(good, threat_model="adaptive", steps=200, purify_steps=200)
    job = Client(server, verbose=False).submit(*heavy, api_name=api)
    deadline = time.perf_counter() + 10
    while not any(x.name == thread for x in threading.enumerate()) and time.perf_counter() < deadline:
        time.sleep(0.05)                            # the work is under way in its worker
    time.sleep(1.0)                                 # ... and has streamed its first heartbeats
    t = time.perf_counter()
    job.cancel()
    while any(x.name == thread for x in threading.enumerate()) and time.perf_counter() - t < STOP_S:
        time.sleep(0.05)
    assert time.perf_counter() - t < STOP_S
    out = Client(server, verbose=False).predict(good, CLASSES, "tiny-random", "single", api_name="/classify")
    assert out["label"] in out["classnames"] and time.perf_counter() - t < ANSWER_S


def test_eight_clients_at_once_get_their_own_answers(server, good):
    def one(k):
        names = [f"thing{k}a", f"thing{k}b", f"thing{k}c"]
        out = Client(server, verbose=False).predict(good, ", ".join(names), "tiny-random", "single",
                                                    api_name="/classify")
        return names, out["classnames"]

    with ThreadPoolExecutor(8) as pool:
        for asked, got in pool.map(one, range(8)):
            assert got == asked


def test_a_request_over_its_time_budget_says_what_to_lower(server, good, monkeypatch):
    import dataclasses

    import app.ui.form as fm

    monkeypatch.setattr(fm, "LIMITS", dataclasses.replace(fm.LIMITS, max_request_seconds=0.5))
    t = time.perf_counter()
    text = refused(Client(server, verbose=False), form(good, threat_model="adaptive", steps=200, purify_steps=200), "/run")
    assert "time limit" in text and "lower the attack steps" in text
    assert time.perf_counter() - t < ANSWER_S     # cut at the 0.5 s limit, not run to the end


# --- bind and expiry --------------------------------------------------------------------------

def test_binds_loopback_unless_on_a_space_or_asked():
    assert bind_address({}) == "127.0.0.1"
    assert bind_address({"SPACE_ID": "someone/clipure"}) == "0.0.0.0"
    assert bind_address({"GRADIO_SERVER_NAME": "192.168.1.5", "SPACE_ID": "x"}) == "192.168.1.5"


def test_old_output_folders_are_swept(tmp_path):
    old, new = tmp_path / "clipure-old", tmp_path / "clipure-new"
    for d in (old, new):
        d.mkdir()
        (d / "adv.png").write_bytes(b"x")
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    assert sweep(3600, tmp_path) == 1 and not old.exists() and new.exists()


def test_launch_options_fill_in_the_bind_address_the_body_limit_and_expiry(monkeypatch):
    from app.ui.server import launch_options
    monkeypatch.delenv("GRADIO_SERVER_NAME", raising=False)
    monkeypatch.delenv("SPACE_ID", raising=False)
    kw = launch_options({})
    assert kw["server_name"] == "127.0.0.1" and kw["max_file_size"] == "10mb"
    assert kw["app_kwargs"]["middleware"][0].cls is BodyLimit and "lifespan" in kw["app_kwargs"]
    assert launch_options({"server_name": "0.0.0.0"})["server_name"] == "0.0.0.0"
