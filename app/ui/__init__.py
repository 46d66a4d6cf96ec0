"""The Gradio demo. app/ui/form.py (the request form and its adapter), callbacks.py (the
endpoints), audit_panel.py (the masking audit and the paper preset), events.py (the page's own
events), layout.py (the page and its wiring). The engine (app.*) knows nothing of Gradio."""
from app.ui.layout import build_demo, launch

__all__ = ["build_demo", "launch"]
