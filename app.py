"""CLIPure demo: build the Gradio app and launch it (the Hugging Face Space's app_file).

    python app.py                          # the default backbone, or the bundled model offline
    CLIPURE_BACKBONE=toy-shapes python app.py
"""
try:  # ZeroGPU: `spaces` must be imported before torch
    import spaces  # noqa: F401
except ImportError:
    pass

from app.ui import launch

if __name__ == "__main__":
    launch()
