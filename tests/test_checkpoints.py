"""Checkpoints that can be trusted (issue 21, finding 3): complete or ignored.

- A writer of real checkpoints (pose.training.checkpoints.Checkpoints, a real tf.train.Checkpoint of
  a small Keras model) is killed with SIGKILL at seeded random points inside its checkpoint writes,
  KILLS times; each restart resumes, and loses at most the interval being written.
- Then each file of the newest checkpoint (and the folder's state and fingerprint files) is
  truncated, zeroed, overwritten with garbage and deleted in turn: the resume falls back to the
  previous checkpoint, naming the file and what is wrong, or (folder files) loses nothing.
- End to end through components.train: a damaged newest checkpoint is skipped, saying so; with
  none intact, train stops with one line naming them.
- A bucket (fake-gcs-server for gs://, SeaweedFS for s3://): a damaged newest checkpoint there,
  or a garbage marker, is skipped for the previous one.

The writer runs in children forked from one process that has imported TensorFlow but run nothing
(TensorFlow's import alone takes 5-10 s here; a fork takes none), so the kills cost a second each.
"""

import logging
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import REPO, TINY_CONFIG, TINY_TRAINING

KILLS = 24
KEEP = 2
SIZE = 32  # the writer's model input: a checkpoint of ~0.1 MB

# The zygote: imports once, then forks one writer per line on stdin ("<model folder> <seed>"). A
# writer resumes from the folder (printing what it found), then saves step after step, every variable
# holding the step's number. After one save a timer thread sends the writer SIGKILL at a seeded random
# point of its next save (uniform over the last save's duration; a save that finishes first disarms
# it, and the next save draws again), so every kill lands inside a write.
ZYGOTE = r"""
import os, random, signal, sys, threading, time
import numpy as np, tensorflow as tf, keras
from pathlib import Path
from pose.training.checkpoints import Checkpoints
from pose.training.config import load_config
from tests.tiny_models import build_tiny_pose_model

def say(line):  # one write(2) of a few bytes into a pipe: a kill leaves all of it or nothing
    os.write(1, f"{line}\n".encode())

def writer(folder, seed):
    rng = random.Random(seed)
    cfg = load_config(sys.argv[1], {"keep_checkpoints": int(sys.argv[2])})
    model = build_tiny_pose_model(int(sys.argv[3]))
    optimizer = keras.optimizers.Adam()
    optimizer.build(model.trainable_variables)
    checkpoints = Checkpoints(cfg, model, optimizer, tf.distribute.get_strategy(), Path(folder),
                              True, False, False)
    resumed = checkpoints.restore()
    step = resumed.step
    intact = step == 0 or (
        all(np.all(w.numpy() == step) for w in model.weights)
        and [e["step"] for e in resumed.history] == list(range(1, step + 1))
        and resumed.progress.get("train_seconds") == step)
    say(f"resumed {step} {'intact' if intact else 'WRONG'}")
    history, unarmed, took = resumed.history, 1, 0.0
    while True:
        step += 1
        for w in model.weights:
            w.assign(tf.fill(w.shape, tf.cast(step, w.dtype)))
        optimizer.iterations.assign(step)
        history.append({"step": step, "loss": 1.0 / step})
        say(f"saving {step}")
        kill = None
        if unarmed <= 0:
            kill = threading.Timer(rng.uniform(0, took), os.kill, (os.getpid(), signal.SIGKILL))
            kill.start()
        started = time.perf_counter()
        checkpoints.save(step, history, {"train_seconds": float(step)})
        took = time.perf_counter() - started
        if kill:
            kill.cancel()
        unarmed -= 1
        say(f"saved {step}")

print("ready", flush=True)
for line in sys.stdin:
    pid = os.fork()
    if pid == 0:
        try:
            say(f"pid {os.getpid()}")  # the child's first line, whenever the zygote runs again
            writer(*line.split())
        except BaseException as error:
            say(f"failed {type(error).__name__}: {' '.join(str(error).split())}")
        os._exit(1)
    print(f"exit {os.waitpid(pid, 0)[1]}", flush=True)
"""


class Lines:
    """A child's stdout, line by line, with a timeout (a reader thread feeds a queue)."""

    def __init__(self, stream):
        self.queue = queue.Queue()
        threading.Thread(target=lambda: [self.queue.put(x) for x in stream], daemon=True).start()

    def next(self, timeout=120.0) -> str:
        try:
            return self.queue.get(timeout=timeout).strip()
        except queue.Empty:
            raise AssertionError(f"no line from the writer in {timeout} s") from None


def committed_steps(folder: Path) -> list[int]:
    from pose.files import checkpoint_manifest

    return sorted(
        s for n in os.listdir(folder) if (s := checkpoint_manifest.step_of(n)) is not None
    )


def cut_short(folder: Path) -> bool:
    """Whether the folder holds the remains of an unfinished write: files of a step newer than the
    newest committed one, or a temporary."""
    newest = max(committed_steps(folder), default=0)
    for name in os.listdir(folder):
        head = name.lstrip(".").split(".")[0].split("_")[0]
        if ".tmp" in name or (head.startswith("ckpt-") and int(head[5:]) > newest):
            return True
    return False


@pytest.fixture(scope="module")
def killed_folder(tmp_path_factory) -> tuple[Path, list[dict]]:
    """The checkpoint folder KILLS kills left, and what each restart found."""
    model_folder = tmp_path_factory.mktemp("kill-loop")
    folder = model_folder / "checkpoints"
    zygote = subprocess.Popen(
        [sys.executable, "-c", ZYGOTE, str(TINY_CONFIG), str(KEEP), str(SIZE)],
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    lines = Lines(zygote.stdout)
    rounds, last_saved = [], 0
    try:
        assert lines.next() == "ready"
        for kill in range(KILLS + 1):
            zygote.stdin.write(f"{model_folder} {kill}\n")
            zygote.stdin.flush()
            pid = int(lines.next().split()[1])
            word, step, verdict = lines.next().split(maxsplit=2)
            assert word == "resumed", f"after kill {kill}: {word} {step} {verdict}"
            step = int(step)
            # Resume works, restores exactly that step, and loses at most the interval being
            # written when the kill came (the one saved before it, or committed but not reported).
            assert verdict == "intact", f"after kill {kill}: resumed {step}: {verdict}"
            assert last_saved <= step <= last_saved + 1, (kill, last_saved, step)
            if kill:
                rounds[-1]["lost"] = last_saved + 1 - step
            if kill == KILLS:
                os.kill(pid, signal.SIGKILL)
            last = ""
            while not (line := lines.next()).startswith("exit "):
                last = line
                if line.startswith("saved "):
                    last_saved = int(line.split()[1])
            assert line == f"exit {signal.SIGKILL}", line
            if kill < KILLS:
                rounds.append(
                    {
                        "resumed": step,
                        "inside_save": last.startswith("saving "),
                        "left_files": cut_short(folder),
                    }
                )
    finally:
        zygote.kill()
        zygote.wait(30)
    return folder, rounds


def test_kill_9_during_checkpoint_writes_loses_at_most_one_interval(killed_folder):
    folder, rounds = killed_folder
    lost = [r["lost"] for r in rounds]
    print(
        f"{len(rounds)} kills, {sum(r['inside_save'] for r in rounds)} inside a save, "
        f"{sum(r['left_files'] for r in rounds)} leaving files of an unfinished write; "
        f"intervals lost per resume: { {n: lost.count(n) for n in sorted(set(lost))} }; "
        f"resumed at {[r['resumed'] for r in rounds]}"
    )
    assert len(rounds) == KILLS and max(lost) <= 1
    assert sum(r["inside_save"] for r in rounds) >= KILLS * 3 // 4
    # Pruned to the newest KEEP committed checkpoints, whatever the kills left.
    assert len(committed_steps(folder)) == KEEP


def new_checkpoints(model_folder: Path, **options):
    """The writer's model, optimizer and Checkpoints on `model_folder`, fresh: (checkpoints, model)."""
    import keras
    import tensorflow as tf

    from pose.training.checkpoints import Checkpoints
    from pose.training.config import load_config
    from tests.tiny_models import build_tiny_pose_model

    model = build_tiny_pose_model(SIZE)
    optimizer = keras.optimizers.Adam()
    optimizer.build(model.trainable_variables)
    checkpoints = Checkpoints(
        load_config(TINY_CONFIG, {"keep_checkpoints": KEEP}),
        model,
        optimizer,
        tf.distribute.get_strategy(),
        model_folder,
        True,
        False,
        False,
        **options,
    )
    return checkpoints, model


def restore_into_a_new_model(model_folder: Path, **options):
    """A fresh writer's model restored from `model_folder`: (resumed, model)."""
    checkpoints, model = new_checkpoints(model_folder, **options)
    return checkpoints.restore(), model


def damage(path: Path, how: str) -> None:
    size = path.stat().st_size
    if how == "truncated":
        path.write_bytes(path.read_bytes()[: size // 2])
    elif how == "zeroed":
        path.write_bytes(bytes(size))
    elif how == "garbage":
        path.write_bytes(np.random.default_rng(size).bytes(max(size, 64)))
    else:
        path.unlink()


DAMAGES = ("truncated", "zeroed", "garbage", "deleted")


def test_each_damaged_file_of_the_newest_checkpoint_falls_back_saying_so(
    killed_folder, tmp_path, caplog
):
    """Every file of the newest checkpoint, and the folder's own, damaged four ways in turn: the
    resume takes the previous checkpoint (naming the file and what is wrong), or, for the folder's
    files, the newest one."""
    from pose.files import checkpoint_manifest
    from pose.files.remote_checkpoints import FINGERPRINT_FILE
    from pose.training.checkpoints import STATE

    folder, _ = killed_folder
    newest = max(committed_steps(folder))
    own = sorted(n for n in os.listdir(folder) if n.startswith(f"ckpt-{newest}."))
    assert len(own) == 5, own  # index, data, history, progress, manifest
    cases = 0
    for name in [*own, STATE, FINGERPRINT_FILE]:
        for how in DAMAGES:
            copy = tmp_path / f"{name}-{how}"
            shutil.copytree(folder, copy / "checkpoints")
            damage(copy / "checkpoints" / name, how)
            caplog.clear()
            with caplog.at_level(logging.INFO, logger="train"):
                resumed, model = restore_into_a_new_model(copy)
            # A checkpoint that lost its manifest, but that the state file names as committed, is
            # checked by reading its tensors back instead (as are those from before manifests).
            lost_its_manifest = name == checkpoint_manifest.name(newest) and how == "deleted"
            expected = newest - 1 if name in own and not lost_its_manifest else newest
            assert resumed.step == expected, (name, how, caplog.text)
            assert all(np.all(w.numpy() == expected) for w in model.weights), (name, how)
            assert [e["step"] for e in resumed.history] == list(range(1, expected + 1))
            assert resumed.progress["train_seconds"] == expected
            skipped = [r.getMessage() for r in caplog.records if "not intact" in r.message]
            if expected < newest:  # one line naming the checkpoint, the file and what is wrong
                assert len(skipped) == 1, (name, how, caplog.text)
                assert f"ckpt-{newest} is not intact: {name} " in skipped[0], (name, how, skipped)
            else:
                assert not skipped, (name, how, skipped)
            said = lost_its_manifest or (
                how in ("zeroed", "garbage") if name == STATE else name == FINGERPRINT_FILE
            )
            if said and how != "deleted" or lost_its_manifest:
                assert f"/{name} is unreadable" in caplog.text or lost_its_manifest, caplog.text
                assert name in caplog.text, (name, how, caplog.text)
            shutil.rmtree(copy)
            cases += 1
    print(f"{cases} damaged folders, each resumed")


@pytest.mark.slow
def test_train_falls_back_from_a_damaged_checkpoint_and_stops_when_none_is_intact(
    train_shards, tmp_path, caplog, capsys
):
    from components.train import main, train

    model = tmp_path / "model"
    folder = model / "checkpoints"
    train(
        str(TINY_CONFIG),
        [str(train_shards)],
        str(model),
        overrides={**TINY_TRAINING, "max_steps": 2},
    )
    data = next(folder.glob("ckpt-2.data-*"))
    damage(data, "truncated")  # before: IndexError: Read less bytes than requested
    with caplog.at_level(logging.INFO, logger="train"):
        again = train(
            str(TINY_CONFIG),
            [str(train_shards)],
            str(model),
            overrides={**TINY_TRAINING, "max_steps": 2},
        )
    assert f"{folder}/ckpt-2 is not intact: {data.name} has " in caplog.text
    assert again["resumed_from_step"] == 1 and again["steps"] == 2
    assert [e["step"] for e in again["history"]] == [1, 2]
    assert not data.exists() or data.stat().st_size > 0  # the fallback's save replaced it

    # None intact (a deleted data file: before, "do not fit this model"): one line naming them.
    for data in folder.glob("ckpt-*.data-*"):
        data.unlink()
    capsys.readouterr()
    argv = ["--config", str(TINY_CONFIG), "--data", str(train_shards), "--output", str(model)]
    argv += [arg for key, value in TINY_TRAINING.items() for arg in ("--set", f"{key}={value}")]
    assert main([*argv, "--set", "max_steps=3"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert not any(line.startswith("Traceback") for line in err), err
    assert err[-1].startswith(f"train: error: {folder}: no intact checkpoint to resume from: ")
    for step in (1, 2):
        assert f"ckpt-{step}: ckpt-{step}.data-00000-of-00001 is missing" in err[-1], err[-1]
    assert "do not fit" not in err[-1]


def test_a_damaged_checkpoint_in_the_bucket_falls_back_to_the_previous(
    object_store, tmp_path, caplog
):
    """Checkpoints uploaded to a bucket (fake-gcs-server, SeaweedFS): a garbage marker, then a
    damaged newest checkpoint there, then none intact; each start is in a fresh folder (a new
    pod)."""
    from pose.training.errors import TrainError

    uri = f"{object_store.scheme}://{object_store.make_bucket('checkpoints')}/run-1"
    checkpoints, model = new_checkpoints(tmp_path / "pod-1", checkpoint_uri=uri)
    assert checkpoints.restore().step == 0
    for step in (1, 2, 3):
        for w in model.weights:
            w.assign(np.full(w.shape, step, w.dtype))
        checkpoints.optimizer.iterations.assign(step)
        checkpoints.save(step, [{"step": s} for s in range(1, step + 1)], {"train_seconds": step})

    def resume(pod: str) -> int:
        caplog.clear()
        with caplog.at_level(logging.INFO):
            resumed, restored = restore_into_a_new_model(tmp_path / pod, checkpoint_uri=uri)
        assert all(np.all(w.numpy() == resumed.step) for w in restored.weights)
        assert resumed.progress["train_seconds"] == resumed.step
        return resumed.step

    object_store.put(f"{uri}/checkpoint.json", b"\xff\x00garbage")
    assert resume("pod-2") == 3
    assert f"{uri}/checkpoint.json: not JSON" in caplog.text

    data = f"{uri}/ckpt-3.data-00000-of-00001"
    object_store.put(data, object_store.get(data)[:100])
    assert resume("pod-3") == 2
    assert f"{uri}/ckpt-3 is not intact: ckpt-3.data-00000-of-00001 has 100 bytes" in caplog.text

    object_store.put(f"{uri}/ckpt-2.index", b"")
    with pytest.raises(TrainError, match=r"no intact checkpoint to resume from: .*ckpt-3.*ckpt-2"):
        restore_into_a_new_model(tmp_path / "pod-4", checkpoint_uri=uri)
