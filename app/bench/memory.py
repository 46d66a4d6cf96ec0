"""Memory benchmark (not a test): the server's resident memory per /run request, after warm-up.

    python -m app.bench.memory --requests 200 --json
    python -m app.bench.memory --requests 60 --sessions     # a new session (client) per request

Starts `python app.py` on the bundled model (toy-shapes) and sends N sequential /run requests
through gradio_client (a toy example image, its 16 class names, the single template, PGD with 5
steps L-inf 4/255 undefended, CLIPure-Cos with 5 steps). After each request it reads the server's
RSS from /proc; the slope is a least-squares fit over the requests after the warm-up, in MB
(10^6 bytes) per request. It also counts the files under the server's temporary folders.
"""
from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from app.bench import report
from app.views.presets import CLASS_PRESETS
from app.ui.form import FORM, Form

ROOT = Path(__file__).resolve().parents[2]
IMAGE = ROOT / "assets" / "examples" / "toy-red-circle.png"
MODEL = "toy-shapes"


def rss_mb(pid: int) -> float:
    """The resident set size of process `pid`, in MB (10^6 bytes)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024 / 1e6
    raise RuntimeError(f"no VmRSS for process {pid}")


def count_files(root: Path) -> tuple[int, int]:
    """(files, bytes) under root."""
    count = size = 0
    for d, _, files in os.walk(root):
        for f in files:
            try:
                size += (Path(d) / f).stat().st_size
                count += 1
            except FileNotFoundError:   # expired meanwhile
                pass
    return count, size


def start_server(model: str, temp: Path, root: Path = ROOT) -> tuple[subprocess.Popen, str]:
    """`python app.py` of the checkout `root` on a free loopback port, its temporary files under `temp`;
    returns (process, url)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "CLIPURE_BACKBONE": model, "CLIPURE_MODEL": model, "GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_SERVER_PORT": str(port),
           "HF_HUB_OFFLINE": "1", "GRADIO_TEMP_DIR": str(temp / "gradio"), "CLIPURE_TEMP_DIR": str(temp),
           "GRADIO_ANALYTICS_ENABLED": "False"}
    proc = subprocess.Popen([sys.executable, "app.py"], cwd=root, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    url, t0 = f"http://127.0.0.1:{port}/", time.perf_counter()
    while time.perf_counter() - t0 < 300:
        if proc.poll() is not None:
            raise RuntimeError(f"the app exited with status {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=5):
                return proc, url
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("the app did not start within 300 s")


def run_args(attack_steps: int = 5, purify_steps: int = 5, threat_model: str = "undefended") -> list:
    """/run's positional arguments (FORM order) for the bundled model."""
    from gradio_client import handle_file
    form = dict(image=handle_file(str(IMAGE)), classnames=CLASS_PRESETS["Toy shapes (16)"], backbone=MODEL,
                template_set="single", attack="PGD", threat_model=threat_model, eps=4, steps=attack_steps,
                step_size=0, seed=0, targeted=False, target=None, defence="clipure-cos", purify_steps=purify_steps,
                purify_step_size=30.0, momentum=0.0, norm="l2", grad_scope="sample", precision="fp32",
                purify_seed=0, eot=1)
    return [{**Form().values, **form}[name] for name in FORM]   # the rest (a defence's own parameters): defaults


def slope(ys: list[float]) -> float:
    """Least-squares slope of ys against 0, 1, 2, ... (per step)."""
    n = len(ys)
    if n < 2:
        return 0.0
    mx, my = (n - 1) / 2, sum(ys) / n
    return sum((i - mx) * (y - my) for i, y in enumerate(ys)) / sum((i - mx) ** 2 for i in range(n))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=50,
                    help="requests before the slope is measured (the allocator grows for about the first 50)")
    ap.add_argument("--sessions", action="store_true", help="a new client (session) for every request")
    ap.add_argument("--every", type=int, default=10, help="print the RSS every this many requests")
    ap.add_argument("--root", type=Path, default=ROOT, help="the checkout whose app.py to start (before/after)")
    ap.add_argument("--json", action="store_true", help="only the JSON line")
    args = ap.parse_args()
    from gradio_client import Client

    with tempfile.TemporaryDirectory(prefix="clipure-bench-memory-") as tmp:
        temp = Path(tmp)
        proc, url = start_server(MODEL, temp, args.root)
        try:
            client, rss, files0, t0 = None, [], count_files(temp), time.perf_counter()
            for i in range(args.requests):
                if client is None or args.sessions:
                    client = Client(url, verbose=False, download_files=False)
                client.predict(*run_args(), api_name="/run")
                rss.append(rss_mb(proc.pid))
                if not args.json and (i + 1) % args.every == 0:
                    print(f"request {i + 1:>4}: RSS {rss[-1]:.1f} MB", file=sys.stderr, flush=True)
            seconds = time.perf_counter() - t0
            files, size = (a - b for a, b in zip(count_files(temp), files0))
        finally:
            proc.terminate()
            proc.wait(30)
    after = rss[args.warmup:]
    figures = {"model": MODEL, "settings": "PGD-5 L-inf 4/255 undefended, CLIPure-Cos T=5, single template",
               "requests": args.requests, "warmup": args.warmup, "new_session_each": args.sessions,
               "rss_mb_after_warmup": round(rss[min(args.warmup, len(rss)) - 1], 1), "rss_mb_last": round(rss[-1], 1),
               "mb_per_request": round(slope(after), 4),
               "mb_per_request_endpoints": round((after[-1] - after[0]) / max(len(after) - 1, 1), 4),
               "rss_mb_every_10": [round(r, 1) for r in rss[9::10]],
               "new_files": files, "files_per_request": round(files / args.requests, 2),
               "file_kb_per_request": round(size / 1e3 / args.requests, 1),
               "seconds_per_request": round(seconds / args.requests, 3)}
    report(figures, args.json)


if __name__ == "__main__":
    main()
