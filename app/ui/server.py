"""What the public server adds around the page: where it listens, how large a request body may
be, and when files expire. The page (app/ui/layout.py) calls `launch_options` and `prepare`;
nothing here knows the page's widgets.

- Listen: 127.0.0.1 by default, so a classroom laptop is not reachable from its network;
  0.0.0.0 on a Hugging Face Space (SPACE_ID in the environment) or when GRADIO_SERVER_NAME asks.
- Bodies: Gradio's `max_file_size` guards /upload only, and a `data:` URL inside a JSON body
  bypasses it. `BodyLimit` refuses any other body over LIMITS.max_json_body_mb with 413.
- Expiry: Gradio's `delete_cache` removes outputs and uploads older than LIMITS.files_expire_s,
  and `sweep` does the same for the app's own output folders (one root, `output_dir`).
- A temporary folder that cannot be written (full, read-only, not ours): `downloads` gives the
  request's results without their files, and one sentence saying why; the server goes on serving.
- Sessions: at most MAX_SESSIONS are kept (Gradio's `state_session_capacity`, least recently used
  dropped first), and `Blocks` keeps nothing per request in a session (see its docstring).
"""
from __future__ import annotations

import asyncio
import copy
import logging
import os
import shutil
import tempfile
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Callable, TypeVar

import gradio as gr
from starlette.middleware import Middleware

from app.common.errors import STORAGE_FAULTS
from app.common.limits import LIMITS, Limits

log = logging.getLogger(__name__)

# The app's own files (exports before Gradio copies them into its cache), all under one root.
OUTPUT_ROOT = Path(os.environ.get("CLIPURE_TEMP_DIR") or tempfile.gettempdir()) / "clipure-outputs"


def output_dir() -> Path:
    """A fresh folder for one request's files, under OUTPUT_ROOT (swept by `sweep`)."""
    OUTPUT_ROOT.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix="clipure-", dir=OUTPUT_ROOT))


T = TypeVar("T")


def downloads(write: Callable[[Path], T]) -> tuple[T | None, str | None]:
    """(write(a fresh output folder), None), or (None, the sentence for the visitor) when the
    temporary folder cannot be written: a full disk, a read-only mount or no permission. The
    request's results do not depend on its files, so they still show; the operator's log gets the
    path (the visitor's sentence does not). Any other OSError is a real fault and propagates."""
    folder = None
    try:
        folder = output_dir()
        return write(folder), None
    except OSError as e:
        why = STORAGE_FAULTS.get(e.errno)
        if why is None:
            raise
        log.warning("could not write the request's files under %s: %s", OUTPUT_ROOT, e)
        if folder is not None:   # files nobody is offered only take space from the next request
            shutil.rmtree(folder, ignore_errors=True)
        return None, (f"This request's files (PNG, JSON, CSV) could not be saved for download: {why} where "
                      f"the server keeps them, so the results are shown without them.")


def sweep(age_s: float, root: Path = OUTPUT_ROOT) -> int:
    """Delete the request folders under root last modified more than age_s ago; return how many."""
    if not root.is_dir():
        return 0
    cutoff, removed = time.time() - age_s, 0
    for d in root.glob("clipure-*"):
        try:
            if d.stat().st_mtime < cutoff:
                shutil.rmtree(d, ignore_errors=True)
                removed += 1
        except FileNotFoundError:   # another sweep got there first
            pass
    return removed


def expiry(limits: Limits = LIMITS) -> tuple[int, int]:
    """(frequency, age) in seconds for gr.Blocks(delete_cache=...): a file lives between age and
    1.25 x age."""
    age = int(limits.files_expire_s)
    return max(1, age // 4), age


# The sessions Gradio keeps in memory (CLIPURE_MAX_SESSIONS), least recently used dropped first.
# Each holds about 0.2 MB of page configuration (Gradio's per-session copy of the page) and the
# last run's result for the replay (`result_state`: 41 kB on the toy model, 1.3 MB on ViT-B/32 at
# T = 10), which expires files_expire_s after its run.
MAX_SESSIONS = int(os.environ.get("CLIPURE_MAX_SESSIONS", 500))
SKIP = {"__type__": "update"}   # what gr.skip() returns: leave the output as it is


class Blocks(gr.Blocks):
    """gr.Blocks that leaves nothing behind in a session per request.

    Gradio (6.31) answers every `gr.update()` / `gr.skip()` on an output by building a new
    component (a fresh id) and storing it in the session under the output's id. A later plain
    value for that output is post-processed by that new component, which then also stores itself
    under its own id (`postprocess_data`: `if block._id not in state: state[block._id] = block`),
    with its page configuration: nothing ever removes it. A streamed /run (progress with
    gr.skip(), then the final values) so left 18 components in the session per request, about
    0.5 MB, and building a component for every skipped output of every yield was most of the
    event loop's post-processing time.

    Here a bare gr.skip() of a non-state output is answered without building anything (Gradio's
    answer is the same `{"__type__": "update"}`), and after each post-process the components
    Gradio stored under ids of their own are dropped from the session."""

    async def postprocess_data(self, block_fn, predictions, state):
        outputs = list(block_fn.outputs)
        skipped = set()
        if (not block_fn.batch and not getattr(block_fn, "is_validator_function", False)
                and isinstance(predictions, (list, tuple)) and len(outputs) > 1 and len(predictions) == len(outputs)):
            skipped = {i for i, (block, value) in enumerate(zip(outputs, predictions))
                       if isinstance(value, dict) and value == SKIP and not block.stateful}
        if not skipped:
            data = await super().postprocess_data(block_fn, predictions, state)
        else:
            kept = [i for i in range(len(outputs)) if i not in skipped]
            data = [dict(SKIP) for _ in outputs]
            if kept:
                rest = copy.copy(block_fn)
                rest.outputs = [outputs[i] for i in kept]
                values = [predictions[i] for i in kept]
                done = await super().postprocess_data(rest, values[0] if len(kept) == 1 else values, state)
                for i, value in zip(kept, done):
                    data[i] = value
        if state is not None:
            forget_replacements(state, outputs)
        return data


def forget_replacements(state, outputs) -> int:
    """Drop from a session (gradio's SessionState) the components Gradio stored under ids of their
    own for `outputs` (see Blocks); return how many. The output's own entry stays. A Gradio that
    keeps its sessions otherwise is left alone (tests/test_memory.py then fails, not the server)."""
    blocks = getattr(getattr(state, "blocks_config", None), "blocks", None)
    configs = getattr(state, "config_values", None)
    if not isinstance(blocks, dict) or not isinstance(configs, dict):
        return 0
    dropped = 0
    for output in outputs:
        current = blocks.get(output._id)
        if current is not None and current._id != output._id and current._id in blocks:
            del blocks[current._id]
            configs.pop(current._id, None)
            dropped += 1
    return dropped


def bind_address(environ=os.environ) -> str:
    """GRADIO_SERVER_NAME if set; 0.0.0.0 on a Hugging Face Space; else loopback only."""
    if environ.get("GRADIO_SERVER_NAME"):
        return environ["GRADIO_SERVER_NAME"]
    return "0.0.0.0" if environ.get("SPACE_ID") else "127.0.0.1"


DRAIN_BYTES = 100 * 2**20   # an over-limit body up to this size is read (and dropped) before the 413


class BodyLimit:
    """ASGI middleware: a request body over its limit gets 413 and one sentence, before any
    handler reads it. Uploads (a path ending in /upload) may carry max_file_mb plus 1 MB of
    multipart framing; every other body (the JSON API) at most max_json_body_mb."""

    def __init__(self, app, limits: Limits = LIMITS):
        self.app = app
        self.json_bytes = int(limits.max_json_body_mb * 2**20)
        self.upload_bytes = int((limits.max_file_mb + 1) * 2**20)
        self.limits = limits

    def _refusal(self, upload: bool) -> str:
        if upload:
            return f"The upload is over the {self.limits.max_file_mb:g} MB file size limit."
        return (f"The request body is over the {self.limits.max_json_body_mb:g} MB limit for API calls; send "
                f"images as file uploads (at most {self.limits.max_file_mb:g} MB), not inside the request.")

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        upload = scope["path"].rstrip("/").endswith("/upload")
        limit = self.upload_bytes if upload else self.json_bytes
        length = dict(scope.get("headers") or ()).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            if int(length) <= DRAIN_BYTES:   # read and drop it, so that the client gets to read the answer
                while (await receive()).get("more_body", False):
                    pass
            return await self._send_413(send, self._refusal(upload))
        received = 0

        async def counted():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:   # no or a false Content-Length: stop reading, the handler sees a disconnect
                    return {"type": "http.disconnect"}
            return message

        if upload:
            return await self.app(scope, counted, send)
        # A JSON body is small: read it whole (at most the limit), then hand it on.
        chunks, more = [], True
        while more:
            message = await counted()
            if message["type"] == "http.disconnect":
                if received > limit:
                    return await self._send_413(send, self._refusal(upload))
                return
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        body, replayed = b"".join(chunks), False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return await self.app(scope, replay, send)

    @staticmethod
    async def _send_413(send, message: str):
        import json
        payload = json.dumps({"error": message, "detail": message}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(payload)).encode())]})
        await send({"type": "http.response.body", "body": payload})


def _sweeper(limits: Limits):
    """A FastAPI lifespan that sweeps the app's own folders on Gradio's delete_cache schedule."""
    frequency, age = expiry(limits)

    @asynccontextmanager
    async def lifespan(app):
        async def loop():
            while True:
                await asyncio.sleep(frequency)
                await asyncio.to_thread(sweep, age)

        task = asyncio.create_task(loop())
        try:
            yield
        finally:
            task.cancel()
    return lifespan


def prepare(demo, limits: Limits = LIMITS) -> None:
    """Set the page's file expiry (outputs and uploads), unless it set its own."""
    if demo.delete_cache is None:
        demo.delete_cache = expiry(limits)


def launch_options(launch_kwargs: dict, limits: Limits = LIMITS) -> dict:
    """demo.launch keyword arguments with the server's defaults filled in: the bind address, the
    upload limit, the session limit, the body limit and the sweeper. Values the caller passed win."""
    kw = dict(launch_kwargs)
    kw.setdefault("server_name", bind_address())
    kw.setdefault("max_file_size", f"{limits.max_file_mb:g}mb")
    kw.setdefault("state_session_capacity", MAX_SESSIONS)
    app_kwargs = dict(kw.get("app_kwargs") or {})
    app_kwargs["middleware"] = [Middleware(BodyLimit, limits=limits), *app_kwargs.get("middleware", [])]
    app_kwargs.setdefault("lifespan", _sweeper(limits))
    kw["app_kwargs"] = app_kwargs
    return kw
