"""Report by exception: send a value when it left the band around the last one sent, or when
`max_interval_ms` passed without sending (the heartbeat that tells "unchanged" from "dead").

Holding the last sent value reproduces every sample within `band` (a value is sent as soon as it
is more than `band` away), which is the plain deadband the swinging door is compared with.
"""


class Deadband:
    def __init__(self, band: float, max_interval_ms: int | None = None) -> None:
        if band < 0:
            raise ValueError("band must not be negative")
        self.band = band
        self.max_interval_ms = max_interval_ms
        self.sent: float | None = None
        self.sent_at = 0

    def due(self, t_ms: int, value: float) -> bool:
        """True when `value` must be sent now (and it is then taken as the last one sent)."""
        if (
            self.sent is None
            or abs(value - self.sent) > self.band
            or (self.max_interval_ms is not None and t_ms - self.sent_at >= self.max_interval_ms)
        ):
            self.sent = value
            self.sent_at = t_ms
            return True
        return False
