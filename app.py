"""CLIPure demo: build the Gradio app and launch it (the Hugging Face Space's app_file).

    python app.py                       # the default backbone, or the bundled model offline
    CLIPURE_MODEL=toy-shapes python app.py
"""
try:  # ZeroGPU: `spaces` must be imported before torch
    import spaces  # noqa: F401
except ImportError:
    pass

import os

from app.limits import LIMITS
from app.models import load_default
from app.ui import build_demo


def main(prevent_thread_lock: bool = False, **launch_kwargs):
    backbone, notice = load_default()
    if notice:
        print(f"[clipure] {notice}", flush=True)
    demo = build_demo(backbone.name, notice)
    # One engine request at a time (they share the model and the CPU/GPU); at most 16 waiting.
    demo.queue(default_concurrency_limit=1, max_size=int(os.environ.get("CLIPURE_QUEUE_SIZE", 16)))
    launch_kwargs.setdefault("server_name", os.environ.get("GRADIO_SERVER_NAME", "0.0.0.0"))
    launch_kwargs.setdefault("max_file_size", f"{LIMITS.max_file_mb:g}mb")
    demo.launch(prevent_thread_lock=prevent_thread_lock, **launch_kwargs)
    return demo


if __name__ == "__main__":
    main()
