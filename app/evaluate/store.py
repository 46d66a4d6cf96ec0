"""The run's folder: config.json (the fingerprint a resume must match) and results.jsonl (one
line per image and setting, appended as it is computed).

A line is written when its newline is. Lines are appended in order, each in one write, so a kill
or a full disk can only cut the file's last line. Before a run appends, `prepare_out` repairs the
tail: a last line without its newline is cut off, and the groups it leaves incomplete are dropped,
to be computed again. Any other line that does not read as a result stops the run with a sentence
naming it: nothing is skipped silently.
"""
from __future__ import annotations

import json
import os
import re
from contextlib import suppress
from pathlib import Path

from app.common.errors import CLIPureError, writing
from app.evaluate.config import EvalConfig

RESULTS, CONFIG = "results.jsonl", "config.json"
# What a user can do when the folder cannot be written (the end of app.common.errors.writing's sentence).
RESUME = ("free space or make the folder writable and run the same command again (the results already "
          "written are kept and resumed), or pick another --out")
# What resume and the tables read from each line; a line without them is damaged.
KEYS = ("batch", "setting", "clean_correct", "correct", "exceeds_eps", "linf_255")
# What a cut of our own write can leave: json.dumps writes printable ASCII only (ensure_ascii
# escapes the rest), so an unterminated last line is a cut one only if it is "{" and printable ASCII.
# Other bytes there (binary garbage, a file system's zeros) are damage, and get a sentence.
_CUT = re.compile(rb"\{[\x20-\x7e]*|\s*")


class DamagedResultsError(CLIPureError):
    """A line of results.jsonl that a cut cannot explain: garbage bytes, not JSON, not a result."""

    def __init__(self, path: Path, number: int, what: str):
        self.path, self.number = path, number
        super().__init__(f"Line {number} of {path} is damaged ({what}); delete that line and run the same "
                         f"command again: what it held is computed again, every other result is kept.")


def _parse(raw: bytes, path: Path, number: int) -> dict:
    try:
        line = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise DamagedResultsError(path, number, "bytes that are not UTF-8 text") from None
    except json.JSONDecodeError:
        raise DamagedResultsError(path, number, "text that is not JSON") from None
    if not isinstance(line, dict) or any(k not in line for k in KEYS):
        raise DamagedResultsError(path, number, "JSON that is not a result line")
    return line


def scan(path: Path) -> tuple[list[tuple[int, dict]], int]:
    """(byte offset, line) of every result line, and the length in bytes of the whole lines: less
    than the file's when its last line was cut mid-write. Blank lines hold nothing and are passed
    over. Raises DamagedResultsError on any other line that does not read as a result."""
    data = path.read_bytes() if path.exists() else b""
    lines, start, number = [], 0, 0
    while start < len(data):
        number += 1
        end = data.find(b"\n", start)
        if end < 0:   # no newline: the last write was cut, unless the bytes are not ours
            if _CUT.fullmatch(data, start):
                return lines, start
            end = len(data)
        if data[start:end].strip():
            lines.append((start, _parse(data[start:end], path, number)))
        start = end + 1
    return lines, len(data)


def read_results(path: Path) -> list[dict]:
    """Every whole result line (a last line cut mid-write is left out: prepare_out cuts it off)."""
    return [ln for _, ln in scan(path)[0]]


def append(f, lines: list[dict]) -> None:
    """Append result lines to f (a file opened "ab", unbuffered), each in one write: a cut can
    only leave the last line partial. A short write (a nearly full disk) goes on where it stopped,
    and a failed one raises OSError. A kill -9 loses nothing written (the kernel holds it); a power
    cut may lose the last lines, which the next run computes again: no fsync. A full disk or a
    read-only folder raises StorageError, in one sentence."""
    with writing(f.name, RESUME):
        for ln in lines:
            data = memoryview((json.dumps(ln) + "\n").encode())
            while data:
                data = data[f.write(data):]


def write_atomic(path: Path, text: str) -> None:
    """Replace path whole: a cut or a full disk leaves the old file, never half of the new one."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    except OSError as e:
        with suppress(OSError):
            tmp.unlink(missing_ok=True)
        e.filename = str(path)   # name the file the user knows, not its temporary twin
        raise


def completed(lines: list[dict], batch_sizes: dict[int, int]) -> tuple[set, list[dict]]:
    """{(batch, setting key)} done in full, and the lines of those (partial groups are redone)."""
    count: dict[tuple, int] = {}
    for ln in lines:
        count[(ln["batch"], ln["setting"])] = count.get((ln["batch"], ln["setting"]), 0) + 1
    done = {k for k, c in count.items() if c == batch_sizes.get(k[0], -1)}
    return done, [ln for ln in lines if (ln["batch"], ln["setting"]) in done]


def _repair(path: Path, lines: list[tuple[int, dict]], whole: int, done: set) -> None:
    """Leave only the whole lines of complete groups. After a kill the lines to drop are the file's
    tail (a cut line, the groups in flight): cut them off in place, which needs no free space, so a
    run stopped by a full disk resumes once any space is free. Otherwise (a line deleted by hand
    mid-file), rewrite the file through a temporary copy."""
    stale = [i for i, (_, ln) in enumerate(lines) if (ln["batch"], ln["setting"]) not in done]
    first = stale[0] if stale else len(lines)
    size = path.stat().st_size if path.exists() else 0
    if len(stale) == len(lines) - first:   # nothing to keep after the first stale line
        cut = lines[first][0] if stale else whole
        if cut < size:
            os.truncate(path, cut)
        return
    write_atomic(path, "".join(json.dumps(ln) + "\n" for _, ln in lines if (ln["batch"], ln["setting"]) in done))


def prepare_out(cfg: EvalConfig, out: Path, batch_sizes: dict[int, int]) -> set:
    """Check the folder against the config (refuse a changed one), repair the results' tail (a cut
    line, partial groups) and return the done (batch, setting key) pairs. Raises
    DamagedResultsError on a damaged line, OSError where the folder cannot be written."""
    out.mkdir(parents=True, exist_ok=True)
    cfg_path, res_path = out / CONFIG, out / RESULTS
    if cfg_path.exists():
        try:
            saved = json.loads(cfg_path.read_bytes().decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            saved = None
        if not isinstance(saved, dict):
            raise CLIPureError(f"{cfg_path} is damaged (not a JSON object), so {res_path.name} beside it cannot "
                               f"be resumed safely; use another --out.")
        if saved.get("fingerprint") != cfg.fingerprint():
            changed = ", ".join(cfg.changed_fields(saved.get("config", {}))) or "unknown fields"
            raise CLIPureError(f"{out} holds results of a different configuration (changed: {changed}); "
                               f"use another --out or delete {cfg_path.name} and {res_path.name} there.")
    elif res_path.exists() and res_path.stat().st_size:
        raise CLIPureError(f"{res_path} exists without its {CONFIG}, so it cannot be resumed safely; "
                           f"use another --out.")
    lines, whole = scan(res_path)   # before any write: a damaged file stops the run untouched
    write_atomic(cfg_path, json.dumps({"fingerprint": cfg.fingerprint(), "config": cfg.to_dict()}, indent=1) + "\n")
    done, _ = completed([ln for _, ln in lines], batch_sizes)
    _repair(res_path, lines, whole, done)
    return done
