"""A realtime session's audio, charged against its principal's audio quota as it streams.

An upload is reserved at intake and settled when it is transcribed; a live session cannot be
reserved (its length is known only when it ends), and charging it only then would let a client
stream far past AUDIO_MINUTES_PER_HOUR while the session is open. So the session charges the
audio it has spooled, a batch at a time: once at least CHARGE_EVERY_S has arrived since the last
charge (one counter operation per second of audio, not one per 100 ms append; through Redis in
scale-out mode, like every quota), and the rest when it ends. The charge that takes the hour
past the limit ends the session; the audio accepted until then, that batch included, stays
charged and becomes the event, which is not charged again (`Submission.audio_charged`).

A counter that cannot be reached does not end a session: the batch is kept and tried again
with the next one. A process killed mid-session leaves at most the last batch uncharged; its
recovered event is not charged either (the spool records that it was charged as it streamed).
"""

from __future__ import annotations

import logging

from skyhigh.domain.errors import QuotaExceeded
from skyhigh.intake.quotas import Quotas

log = logging.getLogger("skyhigh.realtime")

CHARGE_EVERY_S = 1.0


class AudioMeter:
    """Charges one session's spooled seconds, given as running totals."""

    def __init__(self, quotas: Quotas, owner: str, *, every_s: float = CHARGE_EVERY_S) -> None:
        self._quotas = quotas
        self._owner = owner
        self._every_s = every_s
        self.charged_s = 0.0

    async def track(self, spooled_s: float) -> None:
        """Charge what arrived since the last charge once it is a batch; QuotaExceeded when the
        hour's allowance is now used up (the session must end)."""
        if spooled_s - self.charged_s >= self._every_s:
            await self._charge(spooled_s)

    async def settle(self, spooled_s: float) -> None:
        """The session ended: charge the rest. Never raises (the session is over anyway)."""
        try:
            await self._charge(spooled_s)
        except QuotaExceeded:
            pass

    async def _charge(self, spooled_s: float) -> None:
        amount = spooled_s - self.charged_s
        if amount <= 0:
            return
        try:
            await self._quotas.charge_streamed(self._owner, amount)
        except QuotaExceeded:
            self.charged_s = spooled_s  # counted: the exception only says the hour is over
            raise
        except Exception:
            log.warning("streamed audio could not be counted yet", exc_info=True)
            return
        self.charged_s = spooled_s
