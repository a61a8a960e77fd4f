"""A lake writer killed at random moments, several times over: what readers see afterwards.

The writer is a child process appending large batches in a loop, each batch two files (two
UTC days), and printing a batch's number once `append` has returned. Its disk is slow: it
says "step" before each fsync and rename of a write and waits a little, so that the kill,
SIGKILL at a random step and a random moment around it, lands inside the write (building a
batch takes far longer than writing it: a kill at a random time would rarely hit a write).
Six kills, each followed by a new writer in the same lake. Then: the lake reads without
skipping anything, no staged (hidden) file is read, every visible file is whole Parquet
holding a whole (batch, day) group, and every batch reported is all there.
"""

import random
import signal
import subprocess
import sys
import time
from collections import Counter

import pyarrow.parquet as pq
import pytest

from service.events.lake import EventLake
from tipml.serving import PROJECT_DIR

BATCH = 10_000  # events per batch: half on each of two days, so two files per append
KILLS = 6
# Per append of two files: an fsync of each staged file, two renames, two directory fsyncs.
STEPS = 6
STEP_S = 0.02
WRITER = """
import os
import sys
import time
from datetime import UTC, datetime, timedelta

from service.events.lake import EventLake
from service.events.models import Feedback


def slow(operation):
    def step(*args):
        print("step", flush=True)
        time.sleep(float(sys.argv[5]))
        return operation(*args)

    return step


os.fsync, os.replace = slow(os.fsync), slow(os.replace)
lake_dir, writer, first = sys.argv[1], sys.argv[2], int(sys.argv[3])
lake = EventLake(lake_dir, writer_id=writer)
noon = datetime(2026, 11, 18, 12, tzinfo=UTC)
template = [
    Feedback(
        event_id="x",
        user_id=f"u{i % 97}",
        tip_id=f"tip-{i}",
        reaction="accepted",
        prompt_version="v1",
        timestamp=noon + timedelta(days=i % 2),
    )
    for i in range(int(sys.argv[4]))
]
batch = first
while True:
    lake.append(
        [e.model_copy(update={"event_id": f"b{batch}-{i}"}) for i, e in enumerate(template)]
    )
    print(batch, flush=True)
    batch += 1
"""


def batch_of(event_id: str) -> int:
    return int(event_id.split("-")[0].removeprefix("b"))


@pytest.mark.integration  # runs writer subprocesses
def test_a_lake_writer_killed_again_and_again_leaves_whole_files_and_every_returned_batch(
    tmp_path,
):
    lake_dir = tmp_path / "lake"
    seed = random.randrange(2**32)
    moments = random.Random(seed)
    reported: list[int] = []
    for kill in range(KILLS):
        arguments = [str(lake_dir), f"w{kill}", str(kill * 1000), str(BATCH), str(STEP_S)]
        writer = subprocess.Popen(
            [sys.executable, "-c", WRITER, *arguments],
            cwd=PROJECT_DIR,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert writer.stdout is not None
        before = len(reported)
        # The k-th step of the batch after the first one, then a moment either side of it.
        kill_at, steps = moments.randint(1, STEPS), 0
        for line in iter(writer.stdout.readline, ""):
            if line != "step\n":
                reported.append(int(line))
            elif len(reported) > before and (steps := steps + 1) == kill_at:
                break
        time.sleep(moments.uniform(0, 1.5 * STEP_S))
        writer.send_signal(signal.SIGKILL)
        assert writer.wait(10) == -signal.SIGKILL
        reported += [int(line) for line in writer.stdout.read().split() if line != "step"]

    lake = EventLake(lake_dir)
    visible = [p for d in lake.days("feedback") for p in lake.day_files("feedback", d)]
    groups: Counter[int] = Counter()
    for path in visible:
        ids = pq.read_table(path, columns=["event_id"])["event_id"].to_pylist()
        [batch] = {batch_of(i) for i in ids}  # one batch's file
        assert len(ids) == BATCH // 2, f"{path} is not a whole (batch, day) group (seed {seed})"
        groups[batch] += 1
    read = lake.read("feedback", columns=["event_id"])["event_id"].to_pylist()
    assert not lake.skipped, f"a reader met a file that is not whole (seed {seed})"
    # Only the visible files were read: not one row from a staged file.
    assert len(read) == len(set(read)) == BATCH // 2 * len(visible)
    for batch in reported:
        assert groups[batch] == 2, f"batch {batch} returned but is not all there (seed {seed})"
    # A batch never reported may show one of its days, whole (a kill between its two
    # renames): it was never acknowledged, so whoever sent it sends it again, and readers
    # keep one copy of each event.
    hidden = [p.name for p in lake_dir.rglob(".*")]
    assert all(name.endswith(".tmp") for name in hidden), hidden
