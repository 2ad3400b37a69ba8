"""The scripted fault sequences of the fault-injection harness, as data.

A :class:`Script` is one federation (real processes) and the faults injected into it, in
order. Each :class:`Fault` fires when its :class:`When` is seen (a site received or sent
its message of a stage and round, a site saved the state of a round, the run ended, or at
once after the previous fault); :mod:`tests.faults.driver` runs a script and
:mod:`tests.faults.verdicts` turns what happened into one table row per fault.

The round of a site's message is told by the coordinator's checkpoints: a message seen
after the checkpoint of round k belongs to round k + 1 (an ``evaluate`` message of a new
run before any ``train`` message: round 0, the untrained model).

A killed site can come back only once the SuperLink has marked its node offline (Flower
refuses to activate a node it still counts online: 2 missed heartbeats; the sites run
``mpdrm-supernode --heartbeat-interval`` :data:`HEARTBEAT`), so ``restart-site`` waits
for that in the background while the script goes on.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

#: Node heartbeat interval of the scripts' sites (the least the SuperLink accepts): a killed
#: site is counted offline after about 20 s instead of Flower's 60 s.
HEARTBEAT = 10.0

#: Seconds a stage waits for the other sites once ``min-sites`` valid replies are in. The
#: straggler is released when the other site has replied and must then do its whole
#: message (ClientApp start, evaluation) inside it: 16.2 s in a two-worker CI run, so 12 s
#: was too short there; 35.7 s in a three-worker run on a 2-core AMD EPYC without AVX-512
#: (2026-12-07), so 30 s was too short there; +32.1 s after the other site's reply with a
#: background job beside the three workers (the same machine and day), so 45 s left little.
GRACE = 60.0

#: ``round-timeout`` of the script whose stage cannot reach ``min-sites``: how long the
#: run waits before it fails (short, to keep the suite short, but above a healthy stage on
#: a loaded machine: with 60 s a healthy site's first training reply, ClientApp start and
#: app install included, missed it in a three-worker run on a 2-core AMD EPYC and the run
#: failed in round 1, before its fault, 2026-12-07).
SHORT_TIMEOUT = 150.0

#: Size of the coordinator's small disk in the disk-full script (room for a few tiny-model
#: checkpoints, the summary and Hydra's logs; filled on purpose by ``fill-disk``).
SMALL_DISK = 64 * 2**20


@dataclass(frozen=True)
class When:
    """When a fault fires.

    Attributes
    ----------
    event : str
        ``received`` / ``sent`` (a site's message of ``stage`` and ``round``), ``saved``
        (a site's private state of ``round`` is on disk), ``ended`` (the run finished) or
        ``now`` (at once, after the previous fault).
    stage : str
        ``train`` or ``evaluate`` (``received`` / ``sent``).
    round : int
        Server round of the event.
    site : str
        Whose event; ``""``: the fault's target (``saved``: any site).
    """

    event: str = "now"
    stage: str = ""
    round: int = 0
    site: str = ""

    def describe(self) -> str:
        """Words for the table (``during train of round 2``)."""
        if self.event == "received":
            return f"during {self.stage} of round {self.round}"
        if self.event == "sent":
            who = f"{self.site} " if self.site else ""
            return f"once {who}sent its {self.stage} reply of round {self.round}"
        if self.event == "saved":
            return f"once {self.site or 'a site'} saved round {self.round}"
        return "after the run ended" if self.event == "ended" else ""


@dataclass(frozen=True)
class Fault:
    """One scripted fault.

    Attributes
    ----------
    action : str
        ``kill-site`` (SIGKILL of the SuperNode tree), ``restart-site`` (same key and
        state-dir, once the SuperLink counts the node offline), ``delay-site`` (a
        straggler: SIGSTOP of the site's SuperExec and ClientApps until ``release-site``),
        ``silence-site`` (the same until ``release-site`` or the end: connected, never
        answering), ``hold-site`` (the same, only to set up the next fault),
        ``release-site``, ``truncate-state``, ``kill-coordinator`` (SIGKILL of the SuperLink
        tree, or of the whole simulation), ``restart-coordinator``, ``resume`` (``flwr run``
        / ``mpdrm-simulate`` with ``resume=true``), ``truncate-checkpoint``, ``fill-disk``
        (the coordinator's disk: a file fills it to the last byte), ``free-disk`` (that
        file deleted).
    target : str
        A site label, or ``coordinator``.
    when : When
        When it fires.
    options : dict
        ``resume``: run-config overrides (e.g. more rounds).
    """

    action: str
    target: str = "coordinator"
    when: When = field(default_factory=When)
    options: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        """The fault in words (``kill site-02 during evaluate of round 0``)."""
        verb = {"kill-site": "kill", "restart-site": "restart", "release-site": "release",
                "silence-site": "silence", "hold-site": "hold back", "delay-site": "delay",
                "truncate-state": "truncate the state of", "kill-coordinator": "kill",
                "restart-coordinator": "restart", "truncate-checkpoint": "truncate the newest checkpoint",
                "resume": "resume", "fill-disk": "fill the coordinator's disk", "free-disk": "free the disk"
                }.get(self.action, self.action)
        target = {"truncate-checkpoint": "", "resume": "the run", "fill-disk": "", "free-disk": ""
                  }.get(self.action, self.target)
        what = " ".join(w for w in (verb, target, self.when.describe()) if w)
        return f"{what} ({', '.join(f'{k}={v}' for k, v in self.options.items())})" if self.options else what


@dataclass(frozen=True)
class Script:
    """One federation and its faults.

    Attributes
    ----------
    name : str
        Short name (table rows, run folders).
    where : str
        ``deployment`` (SuperLink + SuperNodes over TLS on 127.0.0.1) or ``simulation``
        (``mpdrm-simulate``, Flower's Ray simulation).
    sites : tuple of str
        Site labels (cohort folders).
    config : dict
        Run-config overrides (deployment: ``flwr run --run-config``; simulation: Hydra).
    faults : tuple of Fault
        In the order they fire.
    reference : bool
        Run the same federation once without faults first: the faulted run's final shared
        weights must equal its own, bit for bit.
    """

    name: str
    where: str
    sites: tuple[str, ...]
    config: dict[str, Any]
    faults: tuple[Fault, ...]
    reference: bool = False


SITES = ("site-01", "site-02")

#: Deployment settings every script shares (on top of ``deploylib.tiny.TINY_RUN``).
DEPLOYED = {"num-server-rounds": 2, "round-grace": GRACE, "round-timeout": 300.0, "min-sites-wait": 60.0}

SITE_FAULTS = Script(
    name="site-faults",
    where="deployment",
    sites=SITES,
    config={**DEPLOYED, "num-server-rounds": 3, "min-sites": 1, "fraction-evaluate": 1.0},
    faults=(
        Fault("delay-site", "site-01", When("received", "evaluate", 0)),
        Fault("release-site", "site-01", When("sent", "evaluate", 0, site="site-02")),
        Fault("silence-site", "site-02", When("received", "train", 1)),
        Fault("release-site", "site-02", When("received", "evaluate", 1, site="site-01")),
        Fault("kill-site", "site-01", When("received", "evaluate", 1)),
        Fault("restart-site", "site-01"),
        Fault("truncate-state", "site-02", When("saved", round=2, site="site-02")),
        Fault("kill-site", "site-02", When("received", "train", 3)),
    ),
)
"""Site faults in one deployed run (2 sites, ``min-sites=1``, 3 rounds, evaluation every
round): each fault hits a stage the other site answers, so there is a reply to aggregate.
The straggler is released only once the other site has replied, so its reply is always
the one that arrives after ``min-sites`` were in (inside ``round-grace``)."""

TOO_FEW = Script(
    name="too-few-sites",
    where="deployment",
    sites=SITES,
    config={**DEPLOYED, "min-sites": 2, "fraction-evaluate": 0.0, "round-timeout": SHORT_TIMEOUT},
    faults=(Fault("silence-site", "site-02", When("received", "train", 2)),),
)
"""``min-sites=2`` of 2 and one site never answers in round 2: the stage cannot reach the
minimum, so the run must fail by ``round-timeout`` with a message naming the minimum and
the missing site, round 1 kept."""

COORDINATOR = Script(
    name="coordinator",
    where="deployment",
    sites=SITES,
    config={**DEPLOYED, "min-sites": 2, "fraction-evaluate": 0.0},
    faults=(
        Fault("hold-site", "site-02", When("received", "train", 2)),
        Fault("kill-coordinator", when=When("sent", "train", 2, site="site-01")),
        Fault("release-site", "site-02"),
        Fault("restart-coordinator"),
        Fault("resume"),
        Fault("truncate-checkpoint", when=When("ended")),
        Fault("resume", options={"num-server-rounds": 3}),
    ),
    reference=True,
)
"""The coordinator dies in round 2 after one site trained and saved it (the other is held
back, so the round cannot complete first), is restarted and the run resumed; then its
newest checkpoint is truncated and the run resumed for one more round."""

SIMULATED_COORDINATOR = Script(
    name="simulated-coordinator",
    where="simulation",
    sites=SITES,
    config={"rounds": 3, "strategy.fraction_evaluate": 0.0},
    faults=(
        Fault("fill-disk", when=When("saved", round=2)),
        Fault("free-disk", when=When("ended")),
        Fault("resume"),
        Fault("kill-coordinator", when=When("saved", round=3)),
        Fault("resume"),
    ),
    reference=True,
)
"""The coordinator's disk (its run folder on a small filesystem of its own; the sites'
state is elsewhere) fills up once a site saved its round-2 state, so the round-2
checkpoint cannot be written; the disk is freed and the run resumed; then
``mpdrm-simulate`` is killed (every process of the run, SIGKILL) once a site saved its
round-3 state, and resumed again. Sites run one at a time (``resources.client_cpus=2`` on
2 CPUs), so the other site has not trained that round yet."""
