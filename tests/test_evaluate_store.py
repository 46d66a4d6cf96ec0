"""Storage faults lose nothing. results.jsonl: a resume after a cut at any byte equals an
uninterrupted run, row for row, and a damaged line, a full disk or a read-only folder each get one
sentence and exit status 2, with every line already written still there (in process, on a run of
8 lines cheap enough to resume 21 times). The server: a temporary folder that cannot be written
costs a request its files, not its results, and says so in one sentence."""
import builtins
import errno
import io
import json
import os
import shutil
from pathlib import Path

import pytest

from app.evaluate import run_evaluation, tables
from app.evaluate.cli import config_from_args, main, parser
from app.evaluate.store import RESULTS, read_results

# 4 images in batches of 2, two settings (bare CLIP and CLIPure, sharing one attack under
# `undefended`): 8 lines, 1-4 batch 0 (1-2 bare CLIP, 3-4 CLIPure) and 5-8 batch 1.
ARGS = ["--data", "toy", "--n", "4", "--batch-size", "2", "--backbone", "toy-shapes", "--template-set", "single",
        "--defences", "none,clipure-cos", "--purify-steps", "2", "--attacks", "PGD", "--eps", "8", "--steps", "1",
        "--threat-models", "undefended", "--no-progress"]
CFG = config_from_args(parser().parse_args(ARGS))


def rows(out: Path) -> list[dict]:
    """The result lines in file order, without the timing (the one field that differs between runs)."""
    return [{k: v for k, v in ln.items() if k != "seconds"} for ln in read_results(out / RESULTS)]


def summary_rows(out: Path) -> list[dict]:
    return tables.summarise(CFG, read_results(out / RESULTS))["rows"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """One uninterrupted run, reports included."""
    out = tmp_path_factory.mktemp("reference")
    run_evaluation(CFG, out, progress=False)
    return out


@pytest.fixture
def copy(reference, tmp_path):
    """A fresh copy of the finished run (replacing the last one) whose results.jsonl holds `data`."""
    def make(data: bytes) -> Path:
        out = tmp_path / "run"
        shutil.rmtree(out, ignore_errors=True)
        shutil.copytree(reference, out)
        (out / RESULTS).write_bytes(data)
        return out
    return make


def cut_offsets(data: bytes) -> dict[int, str]:
    """Every line boundary (0 to the whole file), the middle of every line, and the whole line
    without its newline that would complete a setting's batch (lines 2, 4, 6 and 8)."""
    offsets, start = {0: "empty file"}, 0
    for number, line in enumerate(data.splitlines(keepends=True), 1):
        offsets[start + len(line) // 2] = f"middle of line {number}"
        if number % 2 == 0:
            offsets[start + len(line) - 1] = f"line {number} without its newline"
        start += len(line)
        offsets[start] = f"after line {number}"
    return offsets


def test_a_resume_after_a_cut_at_any_offset_equals_the_uninterrupted_run(reference, copy):
    data = (reference / RESULTS).read_bytes()
    assert len(data.splitlines()) == 8
    whole = rows(reference)
    offsets = cut_offsets(data)
    assert len(offsets) == 1 + 2 * 8 + 4
    for offset, where in sorted(offsets.items()):
        out = copy(data[:offset])
        stats = run_evaluation(CFG, out, progress=False, reports=False)
        assert rows(out) == whole, where
        assert summary_rows(out) == summary_rows(reference), where
        after = (out / RESULTS).read_bytes()
        # What was kept is the cut file's whole lines of complete groups, byte for byte (timings
        # included: not computed again); every other line was computed once more.
        kept = len(after) - len(b"".join(after.splitlines(keepends=True)[8 - stats["result_lines_computed"]:]))
        assert data[:kept] == after[:kept] and kept <= offset, where
        assert after.endswith(b"\n") and stats["result_lines_computed"] <= 8, where


def test_a_garbled_line_mid_file_gets_a_sentence_naming_it_and_exit_2(reference, copy, capsys):
    lines = (reference / RESULTS).read_bytes().splitlines(keepends=True)
    for garbage in (b"\xff\xfe\x00\x01\x80garbage\n", b"hello, not a result\n", b"[1, 2, 3]\n"):
        damaged = b"".join(lines[:2]) + garbage + b"".join(lines[3:])
        out = copy(damaged)
        assert main([*ARGS, "--out", str(out)]) == 2
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and err.startswith(f"Line 3 of {out / RESULTS} is damaged"), err
        assert "delete that line and run the same command again" in err, err
        assert (out / RESULTS).read_bytes() == damaged   # untouched, nothing dropped


def test_garbage_on_the_last_line_gets_a_sentence_and_exit_2(reference, copy, capsys):
    """A cut of our own writes leaves printable ASCII from "{" on; bytes no write of ours produces
    are damage, with or without their newline."""
    data = (reference / RESULTS).read_bytes()
    for garbage in (b"\xff\xfe\x00\x01\x80garbage", b"\xff\xfe\x00\x01\x80garbage\n", b"\x00" * 16):
        out = copy(data + garbage)
        assert main([*ARGS, "--out", str(out)]) == 2
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and err.startswith(f"Line 9 of {out / RESULTS} is damaged"), err
        assert (out / RESULTS).read_bytes() == data + garbage


def test_a_damaged_config_gets_a_sentence_and_exit_2(reference, copy, capsys):
    data = (reference / RESULTS).read_bytes()
    out = copy(data)
    (out / "config.json").write_bytes(b"\xff\xfe\x00garbage")
    assert main([*ARGS, "--out", str(out)]) == 2
    assert capsys.readouterr().err.strip() == (f"{out / 'config.json'} is damaged (not a JSON object), so "
                                               f"results.jsonl beside it cannot be resumed safely; use another --out.")
    assert (out / RESULTS).read_bytes() == data


class FullDisk(io.RawIOBase):
    """A results.jsonl on a disk that fills up after `room` more bytes: a short write, then ENOSPC."""

    def __init__(self, path, room: int):
        self.f, self.room, self.name = open(path, "ab", buffering=0), room, str(path)

    def writable(self):
        return True

    def write(self, data) -> int:
        if self.room <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        n = self.f.write(bytes(data[:self.room]))
        self.room -= n
        return n

    def close(self):
        self.f.close()
        super().close()


def test_a_full_disk_while_appending_gets_a_sentence_and_the_resume_completes(reference, copy, monkeypatch, capsys):
    from app.evaluate import runner
    data = (reference / RESULTS).read_bytes()
    first_batch = b"".join(data.splitlines(keepends=True)[:4])
    out = copy(first_batch)
    monkeypatch.setattr(runner, "open", lambda path, *a, **kw: FullDisk(path, room=700), raising=False)
    assert main([*ARGS, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"Could not write {out / RESULTS}: the disk is full; free space or make the folder writable and "
                   f"run the same command again (the results already written are kept and resumed), or pick "
                   f"another --out."), err
    after = (out / RESULTS).read_bytes()
    assert after.startswith(first_batch) and len(after) == len(first_batch) + 700   # a line cut by the full disk
    monkeypatch.undo()
    assert main([*ARGS, "--out", str(out)]) == 0
    assert rows(out) == rows(reference) and (out / RESULTS).read_bytes().startswith(first_batch)


def test_a_full_disk_while_writing_the_reports_gets_a_sentence_and_keeps_the_results(reference, copy, monkeypatch,
                                                                                       capsys):
    from matplotlib.figure import Figure

    def full(self, *a, **kw):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    data = (reference / RESULTS).read_bytes()
    out = copy(data[:len(data) // 2])
    monkeypatch.setattr(Figure, "savefig", full)
    assert main([*ARGS, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"Could not write {out}: the disk is full; free space") and "\n" not in err, err
    assert rows(out) == rows(reference)   # every result is on disk; only a report is missing


def writes_fail(monkeypatch, code: int, folders: bool = True) -> None:
    """Every write fails with errno `code`, as on a full disk (ENOSPC) or a read-only mount (EROFS):
    opening a file to write, and with folders also mkdir, truncate and rename. Reading still works."""
    real_open = io.open

    def opened(file, mode="r", *a, **kw):
        if any(c in mode for c in "wax+"):
            raise OSError(code, os.strerror(code), str(file))
        return real_open(file, mode, *a, **kw)

    def refused(path, *a, **kw):
        raise OSError(code, os.strerror(code), str(path))
    monkeypatch.setattr(io, "open", opened)
    monkeypatch.setattr(builtins, "open", opened)
    for name in ("mkdir", "truncate", "replace") if folders else ():
        monkeypatch.setattr(os, name, refused)


@pytest.fixture
def read_only(monkeypatch):
    writes_fail(monkeypatch, errno.EROFS)


@pytest.mark.parametrize("state", ["new folder", "cut mid-line"])
def test_a_read_only_folder_gets_a_sentence_and_exit_2(reference, copy, tmp_path, capsys, state, request):
    data = (reference / RESULTS).read_bytes()
    out = tmp_path / "new" if state == "new folder" else copy(data[:len(data) // 2])
    request.getfixturevalue("read_only")
    assert main([*ARGS, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    named = out if state == "new folder" else out / "config.json"
    assert err.startswith(f"Could not write {named}: the file system is read-only; ") and "\n" not in err, err
    if state == "cut mid-line":
        assert (out / RESULTS).read_bytes() == data[:len(data) // 2]
        assert json.loads((out / "config.json").read_text())["fingerprint"] == CFG.fingerprint()


# --- the server's files -------------------------------------------------------------------------

REQUEST = dict(image=None, classnames="cat, dog, car, plane", backbone="tiny-random", template_set="single",
               attack="PGD", threat_model="adaptive", eps=8, steps=2, step_size=0, seed=1, targeted=False,
               target=None, defence="clipure-cos", purify_steps=4, purify_step_size=30.0, momentum=0.0, norm="l2",
               grad_scope="sample", precision="fp32", purify_seed=0, eot=1)


@pytest.mark.parametrize("code, why, folders", [
    (errno.ENOSPC, "the disk is full", False),            # the folder is made, its first file is not
    (errno.EROFS, "the file system is read-only", True),  # not even the folder
    (errno.EACCES, "permission is denied", True),
])
def test_a_request_shows_its_results_without_files_when_the_temp_folder_cannot_be_written(monkeypatch, tmp_path,
                                                                                           code, why, folders):
    from app.views.presets import EXAMPLES_DIR
    from app.ui import callbacks as cb
    from app.ui.form import FORM, RUN_OUTPUTS, Form
    from app.ui import server
    values = [{**Form().values, **REQUEST, "image": str(EXAMPLES_DIR / "cat.png")}[n] for n in FORM]
    sentence = (f"This request's files (PNG, JSON, CSV) could not be saved for download: {why} where the server "
                f"keeps them, so the results are shown without them.")
    root = tmp_path / "outputs"   # this test's own, so requests of other processes do not count
    root.mkdir()
    monkeypatch.setattr(server, "OUTPUT_ROOT", root)
    writes_fail(monkeypatch, code, folders)
    final = dict(zip(RUN_OUTPUTS, list(cb.run_demo(*values))[-1]))
    assert final["status"].startswith("**Done in") and final["status"].endswith(" " + sentence), final["status"]
    assert final["clean_label"] and final["adv_label"] and final["purified_label"] and "L-inf" in final["stats"]
    assert final["prob_plot"] is not None and final["replay"] == 4
    assert all(final[k] is None for k in ("adv_image", "pert_image", "adv_download", "json_file", "csv_file"))
    *_, (adv, clean, stats) = cb.attack_api(*values)
    assert adv is None and clean is None and stats["warnings"][-1] == sentence and stats["adversarial"]["label"]
    assert not list(root.iterdir())   # no half-written folder left to take space
    monkeypatch.undo()   # the same server, once the folder can be written again: files as before
    final = dict(zip(RUN_OUTPUTS, list(cb.run_demo(*values))[-1]))
    assert Path(final["json_file"]).is_file() and sentence not in final["status"]


def test_the_lessons_the_comparison_and_the_audit_answer_without_their_files_when_the_folder_is_full(monkeypatch):
    import pandas as pd
    from app.flows.pipeline import run_pipeline
    from app.attacks import AttackConfig
    from app.defences import PurifyConfig
    from app.ui import lessons as ls
    from app.ui import server
    from app.views.presets import EXAMPLES_DIR

    def full():
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(server, "output_dir", full)
    assert ls.table_csv(pd.DataFrame({"threat model": ["undefended"]})) is None   # the table shows, no CSV
    r = run_pipeline(str(EXAMPLES_DIR / "cat.png"), "cat, dog, car", AttackConfig(steps=1),
                     PurifyConfig(steps=2), backbone="tiny-random", template_set="single")
    text, images, plot, slider, files = ls.on_lesson_done(0)(r, False)
    assert "could not be saved for download: the disk is full" in text and files["visible"] is False
