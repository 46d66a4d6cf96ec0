"""Tests never download: the hub is switched off before anything imports huggingface_hub."""
import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("CLIPURE_DEVICE", "cpu")
# The suite loads several small backbones; the public default (2) is tested on its own.
os.environ.setdefault("CLIPURE_MAX_LOADED_BACKBONES", "8")

import contextlib  # noqa: E402
import socket  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

# CLIPURE_TEST_THREADS=1 runs the suite single-threaded (reduced precision is not bit-stable
# across thread counts; the fp16 agreement test runs under both itself).
torch.set_num_threads(int(os.environ.get("CLIPURE_TEST_THREADS") or min(2, torch.get_num_threads())))

CLASSES = ["cat", "dog", "car", "plane", "tree"]


def pytest_configure(config):
    config.addinivalue_line("markers", "weights: needs real pretrained weights from the hub; skips offline")
    config.addinivalue_line("markers", "slow: takes more than a few seconds")


@pytest.fixture(scope="session")
def tiny():
    from app.clip.models import load_backbone
    return load_backbone("tiny-random")


@pytest.fixture(scope="session")
def noise_image():
    return Image.fromarray((np.random.RandomState(0).rand(48, 40, 3) * 255).astype(np.uint8))


@pytest.fixture(scope="session")
def tiny_setup(tiny):
    """(classifier, blank) on the tiny random model, single template."""
    from app.clip.zeroshot import TEXT_CACHE, build_classifier
    return build_classifier(tiny, CLASSES, "single"), TEXT_CACHE.blank_embedding(tiny, "single")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def launched(default_backbone: str):
    """The app launched as app.py does, with the given default backbone (CLIPURE_BACKBONE), for the
    block's life: yields (demo, url). The server makes the backbone it starts on the engine's default
    (for API calls that name none); the test process's default is restored after."""
    import app.clip.models
    from app.ui import launch
    before, app.clip.models.DEFAULT_BACKBONE = app.clip.models.DEFAULT_BACKBONE, default_backbone
    demo = None
    try:
        port = free_port()
        demo = launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=port, quiet=True)
        yield demo, f"http://127.0.0.1:{port}/"
    finally:
        if demo is not None:
            demo.close()
        app.clip.models.DEFAULT_BACKBONE = before


@pytest.fixture(scope="session")
def server():
    """The app on 127.0.0.1 with CLIPURE_BACKBONE=tiny-random, shared by the end-to-end and browser tests."""
    with launched("tiny-random") as (_, url):
        yield url
