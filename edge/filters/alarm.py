"""An alarm with hysteresis: raised when a value reaches `high`, cleared only when it falls to
`high - hysteresis`, so a value wandering around the threshold does not chatter."""

from typing import Literal

Transition = Literal["start", "end"]


class HysteresisAlarm:
    def __init__(self, high: float, hysteresis: float = 0.0) -> None:
        if hysteresis < 0:
            raise ValueError("hysteresis must not be negative")
        self.high = high
        self.hysteresis = hysteresis
        self.active = False

    def update(self, value: float) -> Transition | None:
        """ "start" when the alarm is raised by `value`, "end" when cleared, else None."""
        if not self.active and value >= self.high:
            self.active = True
            return "start"
        if self.active and value <= self.high - self.hysteresis:
            self.active = False
            return "end"
        return None
