"""Queue benchmark (not a test): /classify's latency idle and while a long /run is running.

    python -m app.bench.queue --json
    python -m app.bench.queue --root /tmp/before --json    # another checkout (before/after)

Starts `python app.py` on the bundled model (toy-shapes) and times /classify (a toy example
image, its 16 class names, the single template) through gradio_client: `--repeat` times on an
idle server, then `--repeat` times while one long /run (PGD with `--steps` steps, adaptive, so
every step goes through CLIPure-Cos's T = 10 purification steps) is running; the /run is
cancelled after. A /classify counts only if the /run was still running when it answered.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from app.bench import report
from app.bench.memory import IMAGE, MODEL, ROOT, run_args, start_server
from app.views.presets import CLASS_PRESETS


def classify_s(client) -> float:
    from gradio_client import handle_file
    t0 = time.perf_counter()
    client.predict(handle_file(str(IMAGE)), CLASS_PRESETS["Toy shapes (16)"], MODEL, "single", "fp32",
                   api_name="/classify")
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=200, help="the long /run's attack steps")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--root", type=Path, default=ROOT, help="the checkout whose app.py to start (before/after)")
    ap.add_argument("--json", action="store_true", help="only the JSON line")
    args = ap.parse_args()
    from gradio_client import Client

    with tempfile.TemporaryDirectory(prefix="clipure-bench-queue-") as tmp:
        proc, url = start_server(MODEL, Path(tmp), args.root)
        try:
            client = Client(url, verbose=False, download_files=False)
            classify_s(client)   # the first call pays for the client's and the server's first use
            idle = [classify_s(client) for _ in range(args.repeat)]
            runner = Client(url, verbose=False, download_files=False)   # a second visitor
            t0 = time.perf_counter()
            job = runner.submit(*run_args(args.steps, 10, "adaptive"), api_name="/run")
            while not job.outputs() and not job.done() and time.perf_counter() - t0 < 60:   # its first progress
                time.sleep(0.05)
            time.sleep(1.0)   # well inside the attack
            during, answered_first = [], []   # the calls sent while the /run was running
            for _ in range(args.repeat):
                if job.done():
                    break
                during.append(classify_s(client))
                answered_first.append(not job.done())
            run_s = None
            if job.done():
                run_s = time.perf_counter() - t0
            job.cancel()
        finally:
            proc.terminate()
            proc.wait(30)
    figures = {"model": MODEL, "root": str(args.root), "long_run": f"PGD-{args.steps} adaptive, CLIPure-Cos T=10",
               "classify_idle_s": round(statistics.median(idle), 3),
               "classify_during_run_s": round(statistics.median(during), 3) if during else None,
               "classify_during_run_max_s": round(max(during), 3) if during else None,
               "sent_during_run": len(during), "answered_before_the_run_ended": sum(answered_first),
               "run_ended_after_s": None if run_s is None else round(run_s, 1),
               "idle_all_s": [round(s, 3) for s in idle], "during_all_s": [round(s, 3) for s in during]}
    report(figures, args.json)
    if not during:
        print("the /run ended before any /classify was sent: raise --steps", file=sys.stderr)


if __name__ == "__main__":
    main()
