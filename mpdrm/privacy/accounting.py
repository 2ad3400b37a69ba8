"""Per-site privacy accounting that survives rounds and restarts.

A thin layer over an Opacus accountant: its history ``[(noise_multiplier,
sample_rate, steps), ...]`` is the whole state, saved as plain data and restored
into a fresh accountant of the same mechanism.
"""
from __future__ import annotations

import functools
import math
from typing import Any, Mapping

from opacus.accountants import IAccountant, create_accountant

from .config import ACCOUNTANTS

STATE_VERSION = 1


def _merged_history(
    history: list[tuple[float, float, int]], noise_multiplier: float, sample_rate: float, steps: int
) -> list[tuple[float, float, int]]:
    """History with ``steps`` more steps appended, merged like Opacus's ``step``."""
    history = list(history)
    if steps <= 0:
        return history
    if history and history[-1][0] == noise_multiplier and history[-1][1] == sample_rate:
        nm, sr, n = history.pop()
        history.append((nm, sr, n + steps))
    else:
        history.append((noise_multiplier, sample_rate, steps))
    return history


class SiteAccountant:
    """The privacy ledger of one site over all its rounds.

    Parameters
    ----------
    mechanism
        Opacus accountant name, ``"prv"`` or ``"rdp"``.

    Attributes
    ----------
    accountant
        The live Opacus accountant. Hand it to a ``PrivacyEngine`` (``make_private``
        does) so that every DP optimizer step is recorded here.
    """

    def __init__(self, mechanism: str = "prv") -> None:
        if mechanism not in ACCOUNTANTS:
            raise ValueError(f"accountant must be one of {ACCOUNTANTS}, got {mechanism!r}")
        self.accountant: IAccountant = create_accountant(mechanism)

    @property
    def mechanism(self) -> str:
        """Accounting mechanism name."""
        return self.accountant.mechanism()

    @property
    def history(self) -> list[tuple[float, float, int]]:
        """``[(noise_multiplier, sample_rate, steps), ...]`` in order."""
        return [(float(nm), float(sr), int(n)) for nm, sr, n in self.accountant.history]

    @property
    def steps(self) -> int:
        """Total DP-SGD steps recorded."""
        return sum(n for _, _, n in self.history)

    # --- persistence -------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Plain, picklable and JSON-able state: mechanism and history."""
        return {
            "version": STATE_VERSION,
            "mechanism": self.mechanism,
            "history": [[nm, sr, n] for nm, sr, n in self.history],
        }

    @classmethod
    def from_state(
        cls, state: Mapping[str, Any] | None, mechanism: str = "prv"
    ) -> "SiteAccountant":
        """Restore a ledger saved by :meth:`state_dict`; ``None`` gives an empty one.

        Raises
        ------
        ValueError
            If the state is malformed or was written by another mechanism than
            ``mechanism`` (mixing mechanisms would silently change the epsilon).
        """
        acct = cls(mechanism)
        if state is None:
            return acct
        if "history" not in state or "mechanism" not in state:
            raise ValueError(f"DP accountant state lacks 'history'/'mechanism': keys {sorted(state)}")
        if state["mechanism"] != mechanism:
            raise ValueError(
                f"DP accountant state was kept with the {state['mechanism']!r} accountant but the "
                f"config asks for {mechanism!r}; keep the same accountant for a site's whole training"
            )
        history = []
        for entry in state["history"]:
            nm, sr, n = entry
            if not (nm >= 0 and 0 < sr <= 1 and int(n) >= 1):
                raise ValueError(f"invalid DP accountant history entry {entry!r}")
            history.append((float(nm), float(sr), int(n)))
        acct.accountant.load_state_dict({"history": history, "mechanism": mechanism})
        return acct

    # --- epsilon -----------------------------------------------------------------
    def _epsilon_of(self, history: list[tuple[float, float, int]], delta: float) -> float:
        return _epsilon(self.mechanism, tuple((float(nm), float(sr), int(n)) for nm, sr, n in history), float(delta))

    def epsilon(self, delta: float) -> float:
        """Epsilon spent so far at ``delta`` (0 before any step, inf with zero noise)."""
        return self._epsilon_of(self.history, delta)

    def epsilon_after(
        self, delta: float, *, noise_multiplier: float, sample_rate: float, steps: int
    ) -> float:
        """Exact look-ahead: epsilon if ``steps`` more steps were taken now.

        Uses the same accountant on the history extended exactly as Opacus would
        extend it, so it equals :meth:`epsilon` after those steps are trained.
        """
        extended = _merged_history(self.history, float(noise_multiplier), float(sample_rate), steps)
        return self._epsilon_of(extended, delta)

    def totals(self, delta: float) -> dict[str, Any]:
        """Per-site totals for ``summary.json``'s ``dp`` object.

        Returns ``{"noise_multiplier", "sample_rate", "steps", "delta", "epsilon"}``
        (plus ``"accountant"``). If the history holds more than one
        (noise, sample rate) pair, the last pair is given and ``"history"`` lists all,
        so that epsilon can still be recomputed independently.
        """
        history = self.history
        out: dict[str, Any] = {
            "noise_multiplier": history[-1][0] if history else None,
            "sample_rate": history[-1][1] if history else None,
            "steps": self.steps,
            "delta": float(delta),
            "epsilon": self.epsilon(delta),
            "accountant": self.mechanism,
        }
        if len(history) > 1:
            out["history"] = [[nm, sr, n] for nm, sr, n in history]
        return out


@functools.lru_cache(maxsize=256)
def _epsilon(mechanism: str, history: tuple[tuple[float, float, int], ...], delta: float) -> float:
    """Epsilon of an accountant history (a pure function, so computed once per history: a
    round's budget look-ahead, its decision and its reply ask for the same ones, and the PRV
    accountant takes about 0.7 s per call on the tiny test runs)."""
    if not history:
        return 0.0
    if any(nm == 0 for nm, _, _ in history):
        return math.inf
    probe = create_accountant(mechanism)
    probe.history = list(history)
    return float(probe.get_epsilon(delta=delta))
