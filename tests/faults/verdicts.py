"""Verdicts: what each injected fault did to the run, from its :class:`~tests.faults.driver.Record`.

:func:`judge` gives one :class:`~tests.faults.table.Row` per fault (steps that only set
up another fault, such as holding a site back or resuming, are judged with it) and
:func:`losses` lists what was written before a fault and is gone or changed afterwards.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from mpdrm import tensorfile
from server.checkpoint import CHECKPOINT_FILE, PREV_CHECKPOINT_FILE
from tests.faults.driver import Injection, Record, checkpoint_weights
from tests.faults.scripts import GRACE, Fault
from tests.faults.table import Row
from tests.faults.watch import Event

#: Slack for the load of the machine on a held or timed-out stage. A hold is measured from
#: the healthy site's ``Sending`` log line to the next instruction a site receives, so it
#: includes the reply's upload, the aggregation, the checkpoint and the next instruction's
#: relay: 1.4 s after an evaluation, about 12 s after a training stage in a run on a loaded
#: 2-core machine, 27 s in a two-worker CI run (a held stage of 39.3 s), 68 s in a
#: three-worker CI run (a held stage of 113.4 s with ``round-grace`` 45 s, 2026-12-07).
#: A too-few-sites run's wait adds the end of the run (summary, ServerApp exit, ``flwr ls``).
#: Still well below what the deadlines replace: without ``round-grace`` a silent site held
#: its stage for ``round-timeout`` (300 s in the scripts), and without ``round-timeout`` a
#: stage that cannot reach ``min-sites`` waits for ever.
SLACK = 120.0

COMPLETED = ("finished:completed", "exit 0")


# ------------------------------------------------------------------------- summary reading
def site_keys(record: Record, site: str) -> set[str]:
    """The keys a site may have in ``per_site`` (its name, or its deployed site id)."""
    return {site, str(record.script.sites.index(site) + 1)}


def stage_block(summary: dict[str, Any], stage: str, rnd: int) -> dict[str, Any]:
    """A stage's entry of the summary (round 0: the untrained model's evaluation)."""
    if rnd == 0:
        return dict(summary.get("initial", {}).get("eval", {}))
    entry = next((r for r in summary.get("rounds", []) if r["round"] == rnd), {})
    return dict(entry.get("eval" if stage == "evaluate" else "train", {}))


def counted(record: Record, site: str, stage: str, rnd: int) -> bool:
    """Whether the site's reply of that stage was aggregated."""
    per_site = stage_block(record.summary(), stage, rnd).get("per_site", {})
    return bool(site_keys(record, site) & set(per_site))


def rejection(record: Record, site: str, stage: str, rnd: int) -> str:
    """The reason the site's reply of that stage was rejected, ``""`` if none."""
    entry = next((r for r in record.summary().get("rounds", []) if r["round"] == rnd), {})
    index = record.script.sites.index(site)
    for rej in entry.get("rejected", []):
        if rej.get("stage") == stage and rej.get("site_id") in (index, index + 1, site):
            return str(rej.get("reason", ""))
    return ""


# ------------------------------------------------------------------------- event timing
def stage_end(record: Record, inj: Injection) -> Event | None:
    """When the stage of the fault's moment closed: a site other than its target received
    an instruction of a later stage, or that round was checkpointed, whichever was first."""
    when = inj.fault.when
    found = [e for e in (record.watcher.stage_closed(inj.at, {inj.fault.target}, when.stage, when.round),
                         record.watcher.find("checkpoint", rnd=when.round, after=inj.at)) if e is not None]
    return min(found, key=lambda e: e.at) if found else None


def since(event: Event | None, inj: Injection) -> float | None:
    """Seconds from the injection to the event."""
    return None if event is None else round(event.at - inj.at, 1)


def _row(record: Record, inj: Injection, ok: bool, verdict: str, recover: float | None, detail: str = "") -> Row:
    return Row(record.script.name, inj.fault.describe(), verdict, ok, recover, detail)


def _completed(record: Record) -> bool:
    return record.status in COMPLETED


# ------------------------------------------------------------------------- site faults
def kill_site(record: Record, i: int) -> Row:
    """A site killed mid-stage: the stage closes without it (round-grace) and the run goes on."""
    inj = record.injections[i]
    f, when = inj.fault, inj.fault.when
    others = [s for s in record.script.sites if s != f.target]
    ok = (_completed(record) and not counted(record, f.target, when.stage, when.round)
          and all(counted(record, s, when.stage, when.round) for s in others))
    end = stage_end(record, inj)
    verdict = (f"run {record.status}; {when.stage} of round {when.round} aggregated without {f.target}"
               if ok else f"run {record.status}; {f.target} counted in {when.stage} {when.round}: "
                          f"{counted(record, f.target, when.stage, when.round)}")
    return _row(record, inj, ok, verdict, since(end, inj), rejection(record, f.target, when.stage, when.round)
                or "no rejection recorded (round 0 keeps none)")


def _next_reply(record: Record, site: str, after: float) -> Event | None:
    return record.watcher.find("sent", site, after=after)


def restart_site(record: Record, i: int) -> Row:
    """A restarted site takes part again: one of its later replies is aggregated."""
    inj = record.injections[i]
    site = inj.fault.target
    started, pid = record.restarts.get(site, (None, "never restarted"))
    replies = [e for e in record.watcher.events if e.kind == "sent" and e.who == site and e.at > inj.at]
    back = next((e for e in replies if counted(record, site, e.stage, e.round)), None)
    ok = isinstance(pid, int) and back is not None
    verdict = (f"rejoined: its {back.stage} reply of round {back.round} counted" if back is not None
               else f"no reply counted after the restart ({len(replies)} sent)")
    wait = "" if started is None else f"new SuperNode started {started - inj.at:.0f} s after the restart request " \
                                      f"(the SuperLink must count the node offline first); "
    return _row(record, inj, ok, verdict, since(back, inj), f"{wait}pid {pid}")


def delay_site(record: Record, i: int) -> Row:
    """A straggler (held until released) is still aggregated."""
    return straggler(record, record.injections[i])


def silence_site(record: Record, i: int) -> Row:
    """A connected site that never answers holds its stage at most ``round-grace``; when
    the others cannot reach ``min-sites`` without it, the run fails by ``round-timeout``."""
    inj = record.injections[i]
    others = len(record.script.sites) - 1
    if others < int(record.script.config.get("min-sites", 1)):
        return too_few(record, inj)
    return silenced(record, inj)


def straggler(record: Record, inj: Injection) -> Row:
    """The delayed site's reply arrives within the grace period and is aggregated."""
    f, when = inj.fault, inj.fault.when
    reply = record.watcher.find("sent", f.target, when.stage, when.round)
    others = [record.watcher.find("sent", s, when.stage, when.round) for s in record.script.sites if s != f.target]
    first = min((e.at for e in others if e is not None), default=None)
    late = None if reply is None or first is None else reply.at - first
    order = "" if late is None else f"; it replied {late:+.1f} s after the first other site (inside round-grace)"
    ok = _completed(record) and counted(record, f.target, when.stage, when.round) and \
        not rejection(record, f.target, when.stage, when.round) and late is not None and late > 0
    verdict = (f"run {record.status}; its delayed reply counted in {when.stage} of round {when.round}"
               if ok else f"run {record.status}; reply counted: {counted(record, f.target, when.stage, when.round)}")
    return _row(record, inj, ok, verdict + order, since(reply, inj),
                rejection(record, f.target, when.stage, when.round) or inj.note)


def silenced(record: Record, inj: Injection) -> Row:
    """Connected but never answering: the stage closes ``round-grace`` after the others."""
    f, when = inj.fault, inj.fault.when
    others = [record.watcher.find("sent", s, when.stage, when.round) for s in record.script.sites if s != f.target]
    end = stage_end(record, inj)
    last = max((e.at for e in others if e is not None), default=None)
    held = None if end is None or last is None else round(end.at - last, 1)
    reason = rejection(record, f.target, when.stage, when.round)
    ok = (_completed(record) and held is not None and held <= GRACE + SLACK and reason.startswith("late:")
          and not counted(record, f.target, when.stage, when.round))
    verdict = (f"run {record.status}; stage held {held} s after the last healthy reply "
               f"(round-grace {GRACE:g} s), then aggregated without {f.target}")
    return _row(record, inj, ok, verdict, held, reason)


def too_few(record: Record, inj: Injection) -> Row:
    """Without the silent site the stage cannot reach ``min-sites``: the run fails by
    ``round-timeout`` with a message naming the minimum and the missing site."""
    f, when = inj.fault, inj.fault.when
    minimum, timeout = int(record.script.config["min-sites"]), float(record.script.config["round-timeout"])
    stopped = record.summary().get("stopped", {})
    reason = str(stopped.get("reason", ""))
    site_id = str(record.script.sites.index(f.target) + 1)
    named = f"min-sites={minimum}" in reason and any(f"missing: {n}" in reason for n in (f.target, f"site {site_id}"))
    ended = record.started + record.wall
    waited = round(ended - inj.at, 1)
    ok = (record.status == "finished:failed" and bool(stopped.get("failed")) and stopped.get("round") == when.round
          and named and waited <= timeout + SLACK and not counted(record, f.target, when.stage, when.round))
    verdict = (f"run {record.status} {waited} s after the fault (round-timeout {timeout:g} s), "
               f"stopped in {stopped.get('stage')} of round {stopped.get('round')}, naming min-sites and the "
               f"missing site: {named}")
    return _row(record, inj, ok, verdict, waited, reason[-300:])


def truncate_state(record: Record, i: int) -> Row:
    """A truncated site state: the site goes on from its previous state, saying so."""
    inj = record.injections[i]
    site = inj.fault.target
    handled = record.watcher.find("received", site, after=inj.at)  # the next message it loads its state for
    sent = _next_reply(record, site, handled.at) if handled is not None else None
    warned = [line for line in record.site_logs.get(site, "").splitlines()
              if "site state" in line and "site_state.safetensors" in line and "ignored" in line]
    ok = sent is not None and counted(record, site, sent.stage, sent.round) and bool(warned)
    verdict = (f"its {sent.stage} reply of round {sent.round} counted, from the previous state, with a WARNING"
               if ok else f"reply: {sent}, warning logged: {bool(warned)}")
    return _row(record, inj, ok, verdict, since(sent, inj), (warned or [""])[0].strip()[-300:])


# ------------------------------------------------------------------------- coordinator faults
def _later(record: Record, i: int, action: str) -> int | None:
    return next((j for j in range(i + 1, len(record.injections)) if record.injections[j].fault.action == action),
                None)


def _final_of_run_after(record: Record, j: int) -> tuple[dict[str, np.ndarray] | None, str]:
    """The weights and status at the end of the run started by injection ``j``."""
    k = next((k for k in range(j + 1, len(record.injections)) if record.injections[k].fault.when.event == "ended"),
             None)
    if k is None:
        return checkpoint_weights(record.run_dir), record.status
    return record.injections[k].weights, str(record.injections[k].seen)


def same_bits(a: dict[str, np.ndarray] | None, b: dict[str, np.ndarray] | None) -> bool:
    """Equal names, dtypes, shapes and bytes."""
    return (a is not None and b is not None and list(a) == list(b)
            and all(a[k].dtype == b[k].dtype and a[k].shape == b[k].shape and a[k].tobytes() == b[k].tobytes()
                    for k in a))


def kill_coordinator(record: Record, i: int) -> Row:
    """Killed mid-round and resumed: the resumed run ends with the reference's weights."""
    inj = record.injections[i]
    rnd = inj.fault.when.round
    mid = record.watcher.find("checkpoint", rnd=rnd, after=float("-inf"))
    mid_round = mid is None or mid.at > inj.at
    j = _later(record, i, "resume")
    weights, status = _final_of_run_after(record, j) if j is not None else (None, "not resumed")
    equal = same_bits(weights, record.reference)
    ok = mid_round and status in COMPLETED and equal
    redone = record.watcher.find("checkpoint", rnd=rnd, after=inj.at)
    verdict = (f"killed in round {rnd} before its checkpoint ({mid_round}); resumed run {status}; final shared "
               f"weights {'equal' if equal else 'DIFFER FROM'} the uninterrupted run's bit for bit")
    return _row(record, inj, ok, verdict, since(redone, inj), inj.note)


def truncate_checkpoint(record: Record, i: int) -> Row:
    """A truncated newest checkpoint: the resume falls back to the previous one, says so,
    and redoes the lost round exactly."""
    inj = record.injections[i]
    summary = record.summary()
    fallback = summary.get("resumed_from")
    lost = int(inj.weights is not None and inj.before.get("rounds", [{}])[-1].get("round", 0))
    # the WARNING as the run recorded it; the ServerApp's log stream (``flwr log``) can lose a
    # short run's lines under load, so it only adds to the detail
    recorded = [line for line in summary.get("checkpoint_fallbacks", []) if CHECKPOINT_FILE in line]
    warned = [line for line in record.logs.splitlines() if "falling back to the previous checkpoint" in line]
    redone = {k: np.asarray(v) for k, v in tensorfile.load(record.run_dir / PREV_CHECKPOINT_FILE)["arrays"].items()}
    equal = same_bits(redone, record.reference) if summary.get("rounds", [{}])[-1].get("round") == lost + 1 else False
    ok = _completed(record) and fallback == lost - 1 and bool(recorded) and equal
    verdict = (f"resumed from round {fallback} (previous checkpoint), the fallback "
               f"{'recorded' if recorded else 'NOT RECORDED'} in summary.json"
               f"{' and logged' if warned else ''}; run {record.status}; "
               f"round {lost} redone {'bit for bit' if equal else 'DIFFERENTLY'}")
    after = record.watcher.find("checkpoint", after=inj.at)
    return _row(record, inj, ok, verdict, since(after, inj), ((recorded or warned) or [""])[0].strip()[-300:])


def fill_disk(record: Record, i: int) -> Row:
    """The coordinator's disk full while it checkpoints: the run stops saying which file
    and why, the previous checkpoint stays readable and unchanged, and once the disk is
    freed the resumed run redoes the round."""
    inj = record.injections[i]
    j = _later(record, i, "free-disk")
    freed = record.injections[j] if j is not None else None
    status = "" if freed is None else str(freed.seen)
    lines = [line for line in record.logs.splitlines() if "checkpoint not written" in line]
    said = any(CHECKPOINT_FILE in line and "No space left on device" in line for line in lines)
    kept = (freed is not None and freed.checkpointed == inj.checkpointed > 0
            and same_bits(freed.weights, inj.weights))
    redone = None if freed is None else record.watcher.find("checkpoint", rnd=inj.checkpointed + 1, after=freed.at)
    ok = status not in ("", *COMPLETED) and said and kept and redone is not None
    verdict = (f"run stopped ({status}) naming {CHECKPOINT_FILE} and 'No space left on device': {said}; "
               f"round-{inj.checkpointed} checkpoint kept unchanged: {kept}; after freeing the disk the resumed "
               f"run checkpointed round {inj.checkpointed + 1}: {redone is not None}")
    return _row(record, inj, ok, verdict, since(redone, inj), (lines or [""])[0].strip()[-300:])


JUDGES: dict[str, Callable[[Record, int], Row]] = {
    "kill-site": kill_site, "restart-site": restart_site, "delay-site": delay_site, "silence-site": silence_site,
    "truncate-state": truncate_state, "kill-coordinator": kill_coordinator,
    "truncate-checkpoint": truncate_checkpoint, "fill-disk": fill_disk,
}
"""Faults judged on their own; the others (``hold-site``, ``release-site``,
``restart-coordinator``, ``resume``, ``free-disk``) set up or complete the fault next to them."""


def judge(record: Record) -> list[Row]:
    """One row per judged fault of the script, in order."""
    return [JUDGES[inj.fault.action](record, i) for i, inj in enumerate(record.injections)
            if inj.fault.action in JUDGES]


# ------------------------------------------------------------------------- nothing lost
def _kept_rounds(inj: Injection, fault: Fault) -> int:
    """Rounds of ``summary.json`` before the fault that must survive it: those of the
    newest readable checkpoint (a run resumes from it and redoes later rounds; a truncated
    checkpoint loses its own round)."""
    return inj.checkpointed - 1 if fault.action == "truncate-checkpoint" else inj.checkpointed


def losses(record: Record) -> list[str]:
    """What was recorded before a fault and differs at the end (``[]``: nothing lost)."""
    final = record.summary()
    by_round = {r["round"]: r for r in final.get("rounds", [])}
    lost: list[str] = []
    cap = None  # once a checkpoint is truncated, the rounds after the readable one are redone
    for inj in record.injections:
        keep = _kept_rounds(inj, inj.fault)
        if cap is not None:
            keep = min(keep, cap)
        if inj.fault.action == "truncate-checkpoint":
            cap = keep if cap is None else min(cap, keep)
        for entry in inj.before.get("rounds", []):
            if entry["round"] <= keep and by_round.get(entry["round"]) != entry:
                lost.append(f"round {entry['round']} of summary.json changed after '{inj.fault.describe()}'")
        if inj.before.get("initial") and final.get("initial") != inj.before["initial"]:
            lost.append(f"the round-0 evaluation changed after '{inj.fault.describe()}'")
    return lost
