"""Gradio components the page needs beyond the stock ones."""
from __future__ import annotations

import math
from functools import wraps

import gradio as gr


class ImagePath(gr.Image):
    """An image input that hands the callback the uploaded file's path, undecoded.

    gr.Image decodes every upload with Pillow before a callback runs, so a broken or hostile
    file gets Gradio's generic error. With the path, app/clip/images.py checks the file first and
    answers in one sentence. The browser side is the stock Image widget.
    """

    def get_block_name(self) -> str:
        return "image"

    def preprocess(self, payload) -> str | None:
        return None if payload is None else payload.path


def lenient_numbers(blocks: gr.Blocks) -> None:
    """Let a missing or non-numeric value of a gr.Number or gr.Slider reach the callback as sent.

    Their own preprocess fails with a TypeError on None or "" and on NaN with precision=0, which
    the client sees as Gradio's generic error. The engine's check_range/check_int answer each of
    those in one sentence that names the field. A finite number still gets Gradio's own bounds check.
    """
    def lenient(preprocess):
        @wraps(preprocess)
        def call(payload):
            finite = isinstance(payload, (int, float)) and not isinstance(payload, bool) and math.isfinite(payload)
            return preprocess(payload) if finite else payload
        return call

    for block in blocks.blocks.values():
        if isinstance(block, (gr.Number, gr.Slider)):
            block.preprocess = lenient(block.preprocess)
