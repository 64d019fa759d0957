"""Fault tests: a kill or a full disk never leaves a file that a later run would trust."""

import dataclasses
import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from conftest import REPO
from microvae import h5io
from microvae.atomic import atomic_path, write_json
from microvae.dataset import SourceTiles, pack
from microvae.errors import MicrovaeError


def big_segmented(path, n=60_000, size=64):
    rng = np.random.default_rng(0)
    images = (rng.random((n, size, size)) > 0.7).astype(np.uint8)
    origin = np.stack([np.arange(n) // 1000, np.zeros(n), np.arange(n) % 1000, np.zeros(n),
                       np.zeros(n)], axis=1).astype(np.int32)
    with h5py.File(path, "w") as h5:
        h5["images"] = images
        h5["origin"] = origin
        h5.attrs["source"] = "big"


@pytest.mark.slow
def test_sigkill_during_pack_leaves_no_dataset(tmp_path):
    segmented = tmp_path / "seg.h5"
    big_segmented(segmented)
    out = tmp_path / "dataset" / "dataset.h5"
    command = [sys.executable, "-m", "microvae", "pack", "--inputs", str(segmented),
               "--fractions", json.dumps({"train": 0.8, "val": 0.1, "test": 0.1}),
               "--seed", "0", "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    process = subprocess.Popen(command, env=env)
    deadline = time.time() + 120
    while time.time() < deadline and process.poll() is None:
        if out.parent.exists() and list(out.parent.glob(".dataset.h5.*.tmp.h5")):
            break
        time.sleep(0.01)
    assert process.poll() is None, "pack finished before it could be killed"
    time.sleep(0.3)  # let it write part of the file
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not out.exists()
    assert list(out.parent.glob(".dataset.h5.*.tmp.h5"))  # the partial file has another name
    # the next run completes, and cleans up the killed writer's temporary file
    subprocess.run(command, env=env, check=True)
    with h5py.File(out) as h5:
        assert sum(len(h5[s]) for s in ("train", "val", "test")) == 60_000
    assert not list(out.parent.glob(".dataset.h5.*.tmp.h5"))


def test_disk_full_while_writing_hdf5(tmp_path, monkeypatch):
    out = tmp_path / "dataset.h5"
    out.write_bytes(b"the user's previous file")
    original = h5py.Group.create_dataset

    def full_disk(self, name, *args, **kwargs):
        if name == "val":
            raise OSError(errno.ENOSPC, "No space left on device")
        return original(self, name, *args, **kwargs)

    monkeypatch.setattr(h5py.Group, "create_dataset", full_disk)
    source = SourceTiles("a", np.zeros((30, 8, 8), np.uint8),
                         np.stack([np.arange(30) // 10] + [np.zeros(30, int)] * 4, 1))
    with pytest.raises(MicrovaeError, match="no space left"):
        h5io.write_arrays(out, *pack([source], {"train": 0.4, "val": 0.3, "test": 0.3}, 0)[:2])
    assert out.read_bytes() == b"the user's previous file"
    assert list(tmp_path.iterdir()) == [out]


def test_disk_full_while_writing_json(tmp_path, monkeypatch):
    out = tmp_path / "metrics.json"

    def full(self, text, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("pathlib.Path.write_text", full)
    with pytest.raises(MicrovaeError, match="metrics.json: no space left"):
        write_json(out, {"a": 1})
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("code, words", [(errno.EROFS, "read-only"),
                                          (errno.EACCES, "permission denied"),
                                          (errno.EDQUOT, "quota")])
def test_write_errors_name_the_final_file_never_its_temporary(tmp_path, monkeypatch, code, words):
    out = tmp_path / "metrics.json"
    out.write_text("the user's previous file")

    def refused(self, text, *args, **kwargs):
        raise OSError(code, os.strerror(code), str(self))

    monkeypatch.setattr("pathlib.Path.write_text", refused)
    with pytest.raises(MicrovaeError) as caught:
        write_json(out, {"a": 1})
    message = str(caught.value)
    assert message.startswith(f"{out}: ") and words in message and ".tmp" not in message
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_a_folder_that_cannot_be_written_is_named_before_anything_is_written(tmp_path,
                                                                            monkeypatch):
    """Running as root, chmod does not refuse anything: os.access stands in for the folder."""
    out = tmp_path / "results" / "dataset.h5"
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode: False if Path(path) == out.parent
                        and mode == os.W_OK else real_access(path, mode))
    with pytest.raises(MicrovaeError, match=f"{out}: permission denied"):
        h5io.write_arrays(out, {"x": np.ones(3)})
    assert list(out.parent.iterdir()) == []


def test_the_command_line_turns_a_permission_error_into_a_message(tmp_path, monkeypatch, capsys):
    from microvae import cli

    source = tmp_path / "image.png"

    def denied(args):
        raise PermissionError(errno.EACCES, "Permission denied", str(source))

    monkeypatch.setitem(cli.COMMANDS, "ingest", dataclasses.replace(cli.COMMANDS["ingest"],
                                                                     run=denied))
    assert cli.main(["ingest", "--files", str(source), "--source", "{}", "--image-size", "8",
                     "--out", str(tmp_path / "out.h5")]) == 1
    err = capsys.readouterr().err
    assert f"{source}: Permission denied" in err and "Traceback" not in err


def test_failed_writer_keeps_the_old_file(tmp_path):
    out = tmp_path / "a.h5"
    h5io.write_arrays(out, {"x": np.ones(3)})
    with pytest.raises(RuntimeError), atomic_path(out) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("crash in the middle")
    with h5py.File(out) as h5:
        assert h5["x"][()].tolist() == [1, 1, 1]
    assert [p.name for p in tmp_path.iterdir()] == ["a.h5"]
