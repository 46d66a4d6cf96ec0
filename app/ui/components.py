"""Gradio components the page needs beyond the stock ones."""
from __future__ import annotations

import gradio as gr


class ImagePath(gr.Image):
    """An image input that hands the callback the uploaded file's path, undecoded.

    gr.Image decodes every upload with Pillow before a callback runs, so a broken or hostile
    file gets Gradio's generic error. With the path, app/images.py checks the file first and
    answers in one sentence. The browser side is the stock Image widget.
    """

    def get_block_name(self) -> str:
        return "image"

    def preprocess(self, payload) -> str | None:
        return None if payload is None else payload.path
