"""The Gradio demo: app/ui/callbacks.py (widget values -> engine -> widget values) and
app/ui/layout.py (the page and its wiring). The engine (app.*) knows nothing of Gradio."""
from app.ui.layout import build_demo, launch

__all__ = ["build_demo", "launch"]
