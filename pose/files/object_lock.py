"""One writer at a time per bucket prefix: a lock object that the store itself referees.

Issue 21: publish (to `<prefix>/.publish.lock`) and train (to `<checkpoint_uri>/.train.lock`) each
hold a lock object for as long as they write a prefix, so that two of them never write and prune
one prefix together. An object store has no lock that dies with its holder (unlike
pose/files/writer_lock.py's flock), so the rules are:

- Taking: the lock object is created only when absent (storage.create_if_absent: gs
  ifGenerationMatch=0, s3 If-None-Match: *), so of two takers the store alone decides which holds
  it; the other is refused at once (LockBusy) with the holder's step, pid, host and start time.
- Staleness: a lock not renewed for `stale_seconds` belongs to a holder that died, and is taken over
  by a write conditional on the version read (storage.replace_if), so that of two takers one wins.
  A holder with `heartbeat_seconds` renews its lock that often from a thread (a conditional
  replace of its own version); one without (publish: minutes of work) is stale `stale_seconds`
  after it started. Ages are the taker's clock minus the holder's: hosts' clocks are assumed to
  agree to well within `stale_seconds`.
- Same owner: a lock whose `owner` is this taker's (train: its output path, which an Argo retry of
  the same KFP task keeps and a new run does not) is an earlier attempt of this same work, killed
  before it could release: taken over at once, without waiting for it to go stale.
- Losing it: a holder whose lock was taken over (it was stalled past `stale_seconds`, or an
  attempt of the same owner started) notices at its next renewal or `confirm()` and must stop
  writing (LockLost).
- Release: the lock object is deleted only while it is still the version this holder wrote
  (storage.delete_if), so a holder never removes its successor's lock.
"""

import datetime
import json
import logging
import os
import socket
import threading
import time

from pose.files import storage


class LockBusy(storage.StorageError):
    """Another live holder has the lock; the message names it."""


class LockLost(storage.StorageError):
    """This holder's lock was taken over: it must write no more."""


def describe(info: dict, step: str = "a holder", now: float | None = None) -> str:
    """The holder a lock object names, as one phrase: "train as pid 7 on host, since <when>"
    (`step` when the object names none)."""
    now = time.time() if now is None else now
    since = _number(info.get("since"))
    renewed = _number(info.get("renewed"))
    started = (
        datetime.datetime.fromtimestamp(since, datetime.UTC).isoformat(timespec="seconds")
        if since is not None
        else "an unknown time"
    )
    text = (
        f"{info.get('step', step)} as pid {info.get('pid')} on {info.get('host')}, since {started}"
    )
    if renewed is not None:
        text += f", renewed {now - renewed:.0f} s ago"
    if info.get("owner"):
        text += f", owner {info['owner']}"
    return text


def _dead_holder_advice(uri: str, seconds_left: float) -> str:
    """What a refused taker can do when the holder is dead (killed with kill -9, its pod deleted): an
    object store has no lock that dies with its holder, so it waits out the staleness or clears it."""
    when = datetime.datetime.fromtimestamp(time.time() + seconds_left, datetime.UTC)
    return (
        f"if that holder is dead, its lock is taken over as stale from "
        f"{when.isoformat(timespec='seconds')} (in {seconds_left:.0f} s), or delete {uri} to take "
        "it now (only once sure it no longer runs)"
    )


def _number(value) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


class ObjectLock:
    """The lock object `uri` for one holder: `with ObjectLock(...):` holds it for the block.

    `step` names the holder in the lock object and in messages ("publish", "train"); `where` is what
    the lock guards, as messages name it; `busy_advice` ends a refusal ("wait for it to end, or
    ...");
    `owner` marks locks an attempt of the same work may take over at once ("" for none); `noun`
    names the holder's kind in messages ("another training is writing it"; `step` by default)."""

    def __init__(
        self,
        uri: str,
        step: str,
        where: str,
        busy_advice: str,
        stale_seconds: float,
        heartbeat_seconds: float | None = None,
        owner: str = "",
        noun: str = "",
    ):
        self.uri, self.step, self.where, self.busy_advice = uri, step, where, busy_advice
        self.noun = noun or step
        self.stale_seconds, self.heartbeat_seconds, self.owner = (
            stale_seconds,
            heartbeat_seconds,
            owner,
        )
        self.log = logging.getLogger(step)
        self.store = storage.store_for(uri)
        self.since = time.time()
        self.nonce = os.urandom(8).hex()
        self.version: str | None = None
        self.lost: str | None = None  # why this holder no longer has the lock
        self._requests = threading.Lock()  # one request on the lock object at a time
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None

    # -- the lock object --

    def _token(self) -> bytes:
        info = {
            "step": self.step,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "since": self.since,
            "nonce": self.nonce,
        }
        if self.heartbeat_seconds:
            info["renewed"] = time.time()
        if self.owner:
            info["owner"] = self.owner
        return json.dumps(info).encode()

    def __enter__(self) -> "ObjectLock":
        self.take()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def take(self) -> None:
        """Holds the lock, or LockBusy naming the live holder; a StorageError when the store cannot
        be read or written (nothing was changed then)."""
        token = self._token()
        for _ in range(5):  # a lock that comes or goes between our read and our create: again
            current = storage.read_versioned(self.uri, self.store)
            if current is None:
                version = storage.create_if_absent(self.uri, token, self.store)
                if version is not None:
                    return self._held(version)
                continue  # another holder created it first (or the client retried ours)
            data, version = current
            if data == token:  # our own create, retried by the client after it had landed
                return self._held(version)
            try:
                info = json.loads(data)
                if not isinstance(info, dict):
                    raise TypeError("not an object")
                age = time.time() - float(info.get("renewed", info["since"]))
            except (ValueError, KeyError, TypeError):
                info, age = {}, float("inf")
            ours = bool(self.owner) and info.get("owner") == self.owner
            if ours:
                self.log.warning(
                    "%s: held by an earlier attempt of this same %s (%s), which did not release "
                    "it (killed?): taking it over",
                    self.uri,
                    self.noun,
                    describe(info, self.step),
                )
            elif age < self.stale_seconds:
                raise LockBusy(
                    f"{self.where}: another {self.noun} is writing it "
                    f"({describe(info, self.step)}; lock object {self.uri}); {self.busy_advice}; "
                    + _dead_holder_advice(self.uri, self.stale_seconds - age)
                )
            else:
                self.log.warning(
                    "%s: a lock %.0f s past renewal (stale after %g s: its holder died; %s): "
                    "taking it over",
                    self.uri,
                    age,
                    self.stale_seconds,
                    describe(info, self.step) if info else "unreadable",
                )
            taken = storage.replace_if(self.uri, token, version, self.store)
            if taken is not None:
                return self._held(taken)
            # Refused: another taker's write came first, or the client retried ours after it had
            # landed (a lost answer); only the object itself tells which.
            after = storage.read_versioned(self.uri, self.store)
            if after is not None and after[0] == token:
                return self._held(after[1])
            kind = "the earlier attempt's" if ours else "the stale"
            raise LockBusy(
                f"{self.where}: another {self.noun} took over {kind} lock object {self.uri} just "
                f"now; {self.busy_advice}"
            )
        raise LockBusy(f"{self.where}: the lock object {self.uri} came and went 5 times; try again")

    def _held(self, version: str) -> None:
        self.version = version
        if self.heartbeat_seconds:
            self._stop.clear()
            self._beat = threading.Thread(
                target=self._heartbeat, name=f"{self.step}-lock-heartbeat", daemon=True
            )
            self._beat.start()

    def _heartbeat(self) -> None:
        """Renews the lock every heartbeat_seconds while held. A renewal refused because the lock
        changed means it was taken over: recorded in `lost`, and renewals stop. A store that cannot
        be reached is tried again next beat (the lock goes stale only if that lasts
        stale_seconds)."""
        while not self._stop.wait(self.heartbeat_seconds):
            try:
                self._renew()
            except storage.StorageError as error:
                self.log.warning(
                    "%s: could not renew this %s's lock: %s", self.uri, self.noun, error
                )
            if self.lost:
                self.log.error("%s", self.lost)
                return

    def _renew(self) -> None:
        with self._requests:
            if self.lost or self.version is None:
                return
            token = self._token()
            renewed = storage.replace_if(self.uri, token, self.version, self.store)
            if renewed is None:  # changed since, or a retried renewal that had landed
                current = storage.read_versioned(self.uri, self.store)
                if current is not None and current[0] == token:
                    renewed = current[1]
                else:
                    self._record_lost(current)
                    return
            self.version = renewed

    def _record_lost(self, current: tuple[bytes, str] | None) -> None:
        if current is None:
            holder = "it was deleted"
        else:
            try:
                holder = f"now held by {describe(json.loads(current[0]), self.step)}"
            except (ValueError, TypeError, AttributeError):
                holder = "it was replaced"
        self.lost = (
            f"{self.where}: this {self.noun} no longer holds the lock object {self.uri} "
            f"({holder}); stopping rather than writing beside another {self.noun}"
        )

    def confirm(self) -> None:
        """LockLost unless the lock object is still the version this holder wrote: call it before
        writing under the prefix."""
        with self._requests:
            if not self.lost:
                current = storage.read_versioned(self.uri, self.store)
                if current is None or current[1] != self.version:
                    self._record_lost(current)
        if self.lost:
            raise LockLost(self.lost)

    def release(self) -> None:
        """Stops renewing, then deletes the lock only while it is the version this holder wrote.
        The read first is for stores that ignore a delete's condition (the fake-gcs-server the
        tests run: its issue 1282); on GCS and S3 the conditional delete alone decides. A failure
        here is a warning: the work is done, and the lock goes stale in stale_seconds."""
        self._stop.set()
        if self._beat is not None:
            self._beat.join()
            self._beat = None
        if self.version is None:
            return
        with self._requests:
            version, self.version = self.version, None
            try:
                current = storage.read_versioned(self.uri, self.store)
                released = (
                    current is not None
                    and current[1] == version
                    and storage.delete_if(self.uri, version, self.store)
                )
            except storage.StorageError as error:
                self.log.warning(
                    "%s: could not remove this %s's lock: %s", self.uri, self.noun, error
                )
                return
        if not released:
            self.log.warning(
                "%s: no longer this %s's lock (taken over as stale?): left in place",
                self.uri,
                self.noun,
            )
