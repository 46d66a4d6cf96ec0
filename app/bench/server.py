"""App benchmark (not a test): time a default request against the running app.

    python scripts/bench_app.py --json            # starts `python app.py` itself
    python scripts/bench_app.py --url http://127.0.0.1:7860/

Default settings: ViT-B/32 architecture with random weights, PGD-10 (L-inf 4/255, undefended),
CLIPure-Cos with the paper's defaults, the single template (the app's CPU default), CPU. Reports the time to the first
trajectory point, the total request time, and the share of the request spent outside the
engine (plots, encoding, transport) = 1 - engine time / request time. As in a browser, output
files (the PNGs, JSON and CSV) are not downloaded as part of the request. The first request
is reported separately: since the server's warm start (app/flows/warm.py) it should cost what the
others cost. `first_page_s` is the time from starting `python app.py` to its first page.
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from gradio_client import Client, handle_file

from app.ui.form import FORM, RUN_OUTPUTS, Form

ROOT = Path(__file__).resolve().parents[2]
IMAGE = ROOT / "assets" / "examples" / "cat.png"
# /run's outputs by name: the API returns them in RUN_OUTPUTS order, without the result State.
API_OUTPUTS = [n for n in RUN_OUTPUTS if n != "result_state"]
STATUS, JSON = API_OUTPUTS.index("status"), API_OUTPUTS.index("json_file")
CLASSES = "airplane, automobile, bird, cat, deer, dog, frog, horse, ship, truck"


def start_server(model: str) -> tuple[subprocess.Popen, str, float]:
    """Start `python app.py`; returns the process, its URL and the seconds until it served the page
    (the server's warm start included)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "CLIPURE_BACKBONE": model, "GRADIO_SERVER_NAME": "127.0.0.1",
           "GRADIO_SERVER_PORT": str(port), "HF_HUB_OFFLINE": "1"}
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "app.py"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/"
    while time.perf_counter() - t0 < 300:
        try:
            with urllib.request.urlopen(url, timeout=5):
                return proc, url, time.perf_counter() - t0
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("the app did not start within 300 s")


def one_request(client: Client, model: str) -> dict:
    form = dict(image=handle_file(str(IMAGE)), classnames=CLASSES, backbone=model, template_set="single",
                attack="PGD", threat_model="undefended", eps=4, steps=10, step_size=0, seed=0, targeted=False,
                target=None, defence="clipure-cos", purify_steps=10, purify_step_size=30.0, momentum=0.0, norm="l2",
                grad_scope="sample", precision="fp32", purify_seed=0, eot=1)
    args = [{**Form().values, **form}[name] for name in FORM]   # the rest (a defence's own parameters): defaults
    t0 = time.perf_counter()
    job = client.submit(*args, api_name="/run_stream")
    first = None
    while not job.done():
        if first is None and any("step 0/" in str(o[STATUS]) for o in job.outputs()):
            first = time.perf_counter() - t0
        time.sleep(0.005)
    out = job.result()
    total = time.perf_counter() - t0
    if first is None:   # the whole stream arrived between two polls
        first = total
    # Read after the clock stops: like a browser, the client fetches downloads only on demand.
    with urllib.request.urlopen(out[JSON]["url"]) as f:
        engine = json.loads(f.read())["timings_s"]["total"]
    return {"first_point_s": round(first, 3), "request_s": round(total, 3), "engine_s": round(engine, 3),
            "outside_engine_share": round(1 - engine / total, 4)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", help="a running app; by default one is started")
    ap.add_argument("--backbone", "--model", dest="backbone", default="ViT-B-32-random")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    proc, url, page_s = None, args.url, None
    if url is None:
        proc, url, page_s = start_server(args.backbone)
    try:
        client = Client(url, verbose=False, download_files=False)
        cold = one_request(client, args.backbone)
        warm = [one_request(client, args.backbone) for _ in range(args.repeat)]
    finally:
        if proc is not None:
            proc.terminate()
    med = lambda k: sorted(r[k] for r in warm)[len(warm) // 2]  # noqa: E731
    figures = {"backbone": args.backbone, "settings": "PGD-10 L-inf 4/255 undefended, CLIPure-Cos T=10 eta=30, "
                                                 "single template, CPU",
               "first_page_s": None if page_s is None else round(page_s, 2), "cold_request": cold, "first_point_s": med("first_point_s"), "request_s": med("request_s"),
               "engine_s": med("engine_s"), "outside_engine_share": med("outside_engine_share"),
               "repeats": warm}
    if not args.json:
        print(json.dumps(figures, indent=1))
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
