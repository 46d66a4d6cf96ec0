"""End to end through a launched server: every named endpoint via gradio_client."""
import json
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

gradio_client = pytest.importorskip("gradio_client")
from gradio_client import Client, handle_file  # noqa: E402

from app.views.presets import EXAMPLES_DIR  # noqa: E402
from app.ui.form import RUN_OUTPUTS  # noqa: E402
from tests.conftest import launched  # noqa: E402

IMAGE = str(EXAMPLES_DIR / "cat.png")

CLASSES = "cat, dog, car, plane"
# attack, threat model, eps, steps, step size, seed, targeted, target
ATTACK = ["PGD", "undefended", 8, 5, 0, 3, False, None]
PURIFY = ["clipure-cos", 10, 30.0, 0.0, "l2", "sample"]


def run_outputs(values) -> dict:
    """/run's outputs by name (the State holding the last result is not part of the API)."""
    names = [n for n in RUN_OUTPUTS if n != "result_state"]
    assert len(values) == len(names)
    return dict(zip(names, values))


@pytest.fixture(scope="module")
def client(server):
    return Client(server, verbose=False)


@pytest.fixture(scope="module")
def image():
    return handle_file(str(EXAMPLES_DIR / "cat.png"))


def test_named_endpoints(client):
    names = set(client.view_api(print_info=False, return_format="dict")["named_endpoints"])
    assert {"/classify", "/attack", "/purify", "/run", "/compare", "/audit", "/paper_preset"} <= names


def test_audit_returns_the_checks_and_the_paper_preset_its_values(client, image):
    out = client.predict(image, CLASSES, "tiny-random", "single", "PGD", "official", 8, 2, 0, 0, False, None,
                         *PURIFY, api_name="/audit")
    assert [c["name"] for c in out["checks"]] == list("abcdef") and out["threat_model"] == "official"
    assert set(out["sweep"]) == {"official", "adaptive"} and "norm" in out["gradient"]
    # The engine's audit JSON as it is: the attack (with its EOT K), the purification and the backbone.
    assert out["attack"]["attack"] == "PGD" and out["attack"]["eot"] == 1 and out["backbone"] == "tiny-random"
    assert out["purify"]["defence"] == "clipure-cos" and out["purify"]["seed"] == 0
    preset = client.predict(api_name="/paper_preset")
    assert preset["values"]["attack"] == "AutoAttack-custom" and preset["values"]["precision"] == "fp16"
    assert preset["unmatched"] and "batches of 2" in preset["note"]


def test_classify(client, image):
    out = client.predict(image, CLASSES, "tiny-random", "single", api_name="/classify")
    assert out["classnames"] == ["cat", "dog", "car", "plane"] and out["meaningless"] is True
    assert out["label"] in out["classnames"] and abs(sum(out["confidences"].values()) - 1) < 1e-4


def test_attack_png_is_within_eps_of_the_model_resolution_input(client, image):
    adv_path, clean_path, stats = client.predict(image, CLASSES, "tiny-random", "single", *ATTACK, *PURIFY,
                                                 api_name="/attack")
    adv = np.asarray(Image.open(adv_path).convert("RGB"), dtype=np.int16)
    clean = np.asarray(Image.open(clean_path).convert("RGB"), dtype=np.int16)
    assert adv.shape == clean.shape == (32, 32, 3)             # tiny-random's resolution
    assert np.abs(adv - clean).max() <= 8                      # eps = 8/255, exactly, after PNG
    assert np.abs(adv - clean).max() >= 1
    assert stats["perturbation"]["linf_255"] <= 8 + 1e-3
    assert "undefended" in stats["caption"] and "PGD" in stats["caption"] and "tiny-random" in stats["caption"]


def test_purify_trajectory_has_steps_plus_one_points(client, image):
    out = client.predict(image, CLASSES, "tiny-random", "single", "clipure-cos", 7, 0.1, 0.0, "l2", "sample",
                         api_name="/purify")
    clean_rows = [r for r in out["trajectory"] if r["trajectory"] == "clean"]
    assert [r["step"] for r in clean_rows] == list(range(8))
    cos = [r["cos_to_blank"] for r in clean_rows]
    assert all(b > a for a, b in zip(cos, cos[1:]))   # 7 x 5.7 degrees: the cosine rises each step


def test_run_streams_to_the_full_result(client, image):
    out = run_outputs(client.predict(image, CLASSES, "tiny-random", "single", *ATTACK, *PURIFY, api_name="/run_stream"))
    assert out["replay"] == 10                          # the replay slider now spans the 10 steps
    for panel in ("clean_label", "adv_label", "purified_label"):
        assert out[panel]["label"] in ("cat", "dog", "car", "plane") and len(out[panel]["confidences"]) == 3   # top 3 shown
    assert "succeeded" in out["purified_note"] or "failed" in out["purified_note"]   # from scoring.Outcome
    assert "L-inf" in out["stats"] and "undefended" in out["stats"] and out["status"].startswith("**Done in")
    assert out["prob_plot"]["type"] == "matplotlib" and out["prob_plot"]["plot"]
    assert out["cos_plot"] is None and out["map_plot"] is None   # drawn only when their tab is opened
    data = json.loads(open(out["json_file"]).read())
    assert len(data["embeddings"]["adversarial"]) == 11 and len(data["embeddings"]["clean"]) == 11
    assert open(out["csv_file"]).readline().startswith("trajectory,step,cos_to_blank,top1")
    assert Image.open(out["adv_image"]).size == (32, 32) and Image.open(out["adv_download"]).format == "PNG"


def test_run_by_api_is_one_named_result_with_every_figure_as_a_file(client, image):
    """/run by keyword: predictions in /classify's confidences shape, the verdict, the trajectory, the
    record, and each figure the page draws as a PNG, none missing."""
    result, files = client.predict(image=image, classnames=CLASSES, backbone="tiny-random", eps=4, steps=2,
                                   threat_model="adaptive", purify_steps=4, api_name="/run")
    classify = client.predict(image=image, classnames=CLASSES, backbone="tiny-random", api_name="/classify")
    assert result["predictions"]["clean"] == {"label": classify["label"], "confidences": classify["confidences"]}
    assert set(result["predictions"]) == {"clean", "clean_defended", "attacked", "attacked_defended"}
    assert set(result["verdict"]["attack_succeeded"]) == {"bare_clip", "defence"}
    assert result["defence"]["label"] == "CLIPure-Cos" and result["status"].startswith("**Done in")
    assert len([r for r in result["trajectory"] if r["trajectory"] == "adversarial"]) == 5
    named = {Path(f).name for f in files}
    assert set(result["files"].values()) == named
    for figure in ("prob", "cos", "rot", "map"):   # every figure CLIPure draws, as PNG
        assert Image.open(next(f for f in files if Path(f).name == f"{figure}.png")).format == "PNG"
    jpeg, files = client.predict(image=image, classnames=CLASSES, backbone="tiny-random", eps=4, steps=1,
                                 defence="jpeg", jpeg_quality=50, api_name="/run")
    assert jpeg["defence"] == {"name": "jpeg", "label": "JPEG", "quality": 50}
    assert "CLIPure" not in json.dumps(jpeg["verdict"]) + jpeg["status"]
    assert {"prob", "map"} <= {Path(f).stem for f in files} and "rot.png" not in {Path(f).name for f in files}


def test_compare_runs_all_four_threat_models(client, image):
    attack = ["PGD", "adaptive", *ATTACK[2:]]          # the picked threat model must not leak into the caption
    table, caption = client.predict(image, CLASSES, "tiny-random", "single", *attack, *PURIFY, api_name="/compare")
    assert [row[0] for row in table["data"]] == ["Undefended (transfer)", "Official pipeline", "Adaptive (exact)",
                                                 "BPDA"]
    assert "threat model: each row" in caption and "PGD" in caption
    assert "undefended" not in caption and "adaptive" not in caption


@pytest.mark.parametrize("args, api, match", [
    ((None, CLASSES, "tiny-random", "single"), "/classify", "No image"),
    (("IMG", "cat", "tiny-random", "single"), "/classify", "at least 2"),
    (("IMG", CLASSES, "ViT-Q-1", "single"), "/classify", "ViT-Q-1.*toy-shapes"),
    (("IMG", CLASSES, "tiny-random", "single", "PGD", "undefended", 99, 5, 0, 0, False, None, *PURIFY), "/attack",
     "L-inf eps must be between 0 and 32"),                    # the engine's sentence: no slider clamps it
    (("IMG", CLASSES, "tiny-random", "single", "PGD-L2", "undefended", 20, 5, 0, 0, False, None, *PURIFY),
     "/attack", "L2 eps must be between 0 and 10"),            # the engine's check
    (("IMG", CLASSES, "tiny-random", "single", "PGD", "undefended", 8, 5, 0, 0, True, "zebra", *PURIFY), "/run",
     "not among"),
])
def test_bad_input_gives_an_error_and_the_server_keeps_serving(client, image, args, api, match):
    args = tuple(image if a == "IMG" else a for a in args)
    with pytest.raises(Exception, match=match):
        client.predict(*args, api_name=api)
    out = client.predict(image, CLASSES, "tiny-random", "single", api_name="/classify")
    assert out["label"] in out["classnames"]


@pytest.mark.parametrize("content, match", [
    (b"\x89PNG\r\n\x1a\n" + b"\0" * 64, "not an image that Pillow can read"),   # a PNG signature, then nothing
    (b"just some text, saved as .png", "not an image that Pillow can read"),
])
def test_corrupt_upload_is_refused_in_one_sentence(client, tmp_path, content, match):
    bad = tmp_path / "broken.png"
    bad.write_bytes(content)
    with pytest.raises(Exception, match=match):
        client.predict(handle_file(str(bad)), CLASSES, "tiny-random", "single", api_name="/classify")
    out = client.predict(handle_file(str(EXAMPLES_DIR / "cat.png")), CLASSES, "tiny-random", "single",
                         api_name="/classify")
    assert out["label"] in out["classnames"]


def test_two_users_at_once_get_their_own_results(server, image):
    from concurrent.futures import ThreadPoolExecutor
    a, b = Client(server, verbose=False), Client(server, verbose=False)
    with ThreadPoolExecutor(2) as pool:
        fa = pool.submit(a.predict, image, "cat, dog, car, plane", "tiny-random", "single", api_name="/classify")
        fb = pool.submit(b.predict, image, "red, green, blue", "tiny-random", "single", api_name="/classify")
        ra, rb = fa.result(), fb.result()
    assert ra["classnames"] == ["cat", "dog", "car", "plane"] and rb["classnames"] == ["red", "green", "blue"]


def test_offline_the_default_falls_back_to_the_bundled_model_and_its_examples_are_right():
    from app.views.presets import examples_for
    with launched("ViT-B-32-quickgelu/openai") as (_, url):    # no hub here: HF_HUB_OFFLINE=1
        with urllib.request.urlopen(url + "config") as f:
            config = f.read().decode()
        assert "Offline mode" in config and "toy-shapes" in config
        client = Client(url, verbose=False)
        for path, names in examples_for(toy=True):
            expected = Path(path).stem.removeprefix("toy-").replace("-", " ")
            out = client.predict(handle_file(path), names, "toy-shapes", "single", api_name="/classify")
            assert out["label"] == expected, (path, out)
            assert out["confidences"][expected] > 0.9
        # an API call that names no backbone gets the one the page fell back to
        out = client.predict(image=handle_file(examples_for(toy=True)[0][0]), classnames=examples_for(toy=True)[0][1],
                             api_name="/classify")
        assert out["backbone"] == "toy-shapes"


@pytest.mark.parametrize("api_name", ["/classify", "/attack", "/purify", "/run", "/compare", "/audit"])
def test_every_endpoint_answers_a_keyword_call_with_only_the_image_and_the_class_names(server, api_name):
    """Each endpoint's signature is the form's names with their defaults (app/ui/form.py): a client
    calls by name and leaves out what has a default, the target included."""
    client = Client(server, verbose=False, download_files=False)
    out = client.predict(image=handle_file(IMAGE), classnames="cat, dog, car, plane", api_name=api_name)
    assert out is not None
    info = client.view_api(print_info=False, return_format="dict")["named_endpoints"][api_name]
    names = [p["parameter_name"] for p in info["parameters"]]
    assert names[:2] == ["image", "classnames"] and "param_0" not in names
    required = [p["parameter_name"] for p in info["parameters"] if not p["parameter_has_default"]]
    assert "image" in required and set(required) <= {"image", "classnames"}   # Gradio may offer the page's classes
    assert all(not r["label"].startswith("value_") for r in info["returns"]), info["returns"]


def test_keyword_and_positional_calls_agree(server):
    client = Client(server, verbose=False, download_files=False)
    by_name = client.predict(image=handle_file(IMAGE), classnames="cat, dog", backbone="tiny-random",
                             template_set="single", precision="fp32", api_name="/classify")
    by_order = client.predict(handle_file(IMAGE), "cat, dog", "tiny-random", "single", api_name="/classify")
    assert by_name["confidences"] == by_order["confidences"]
