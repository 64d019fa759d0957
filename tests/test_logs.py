"""Issue 26: the warnings of successful jobs reached only results/logs; a run prints those of
its own jobs at its end (the Snakefile's onsuccess handler)."""

import os
import time

from conftest import REPO
from microvae.logs import warnings_of_logs


def test_warnings_of_the_logs_written_since_the_start(tmp_path):
    (tmp_path / "train").mkdir()
    old = tmp_path / "train" / "latent_2.log"
    old.write_text("10:00:00 WARNING microvae.train: an old warning\n")
    os.utime(old, (time.time() - 100, time.time() - 100))
    start = time.time() - 1
    new = tmp_path / "segment.log"
    new.write_text("10:01:00 INFO microvae: fine\n"
                   "10:01:01 WARNING microvae.stages.data: the phase fraction changed by -28%\n")
    assert warnings_of_logs(tmp_path, since=start) == [
        ("segment.log", "10:01:01 WARNING microvae.stages.data: the phase fraction changed by "
                        "-28%")]
    assert len(warnings_of_logs(tmp_path)) == 2
    assert warnings_of_logs(tmp_path / "missing") == []


def test_the_workflow_prints_them_when_it_succeeds():
    assert 'onsuccess:\n    print_warnings("results/logs")' in (REPO / "workflow" / "Snakefile").read_text()
    assert "since=RUN_STARTED" in (REPO / "workflow" / "rules" / "common.smk").read_text()
