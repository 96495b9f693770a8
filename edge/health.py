"""The device's health, as the --serve page shows it: frame rate, frame age, drops, uptime, MQTT,
and on a Raspberry Pi the SoC's temperature and throttling (a Pi that throttles misses frames).

A leaf: the CLI records each stats window here, a consumer that talks to a broker sets `mqtt`,
and the live view reads a snapshot for /events and /health.json. The Pi's figures come from
files the kernel provides (no vcgencmd, no extra package); where they are absent they are None.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

THERMAL_ZONE = Path("/sys/class/thermal/thermal_zone0/temp")  # millidegrees Celsius; the SoC's on a Pi
# The firmware's bit field that `vcgencmd get_throttled` prints (Raspberry Pi OS kernels).
THROTTLED = Path("/sys/devices/platform/soc/soc:firmware/get_throttled")
THROTTLE_FLAGS = ((0, "under-voltage"), (1, "frequency capped"), (2, "throttled"), (3, "soft temperature limit"))
SINCE_BOOT_SHIFT = 16  # the same flags, set if the condition occurred at any time since boot


class Health:
    """What the live view reports about the device, written by the run and read by the view's clients.

    `mqtt` is the hook for an MQTT consumer: None while MQTT is off, else a word the consumer sets
    as its connection changes ("connected", "disconnected").
    """

    def __init__(self, thermal_zone: Path = THERMAL_ZONE, throttled: Path = THROTTLED):
        self.thermal_zone, self.throttled = Path(thermal_zone), Path(throttled)
        self.started = time.monotonic()
        self.mqtt: str | None = None
        self._lock = threading.Lock()
        self._window: dict = {}  # fps and frame age of the last stats window
        self._dropped = self._skipped = 0  # since the start

    def record(self, stats) -> None:
        """Take a stats window (edge.classify.StageTimes): its rate and frame age, and add its drops and skips."""
        with self._lock:
            self._window = {"fps": round(stats.fps, 2), "frame_age_ms": round(stats.age_ms, 1)}
            self._dropped += stats.dropped
            self._skipped += stats.skipped

    def snapshot(self) -> dict:
        """The health fields as JSON values; None where not known (no stats window yet, not a Pi)."""
        with self._lock:
            fields = {"uptime_s": round(time.monotonic() - self.started, 1), "fps": None, "frame_age_ms": None,
                      **self._window, "dropped": self._dropped, "skipped": self._skipped}
        return {**fields, "mqtt": self.mqtt, "cpu_temperature_c": self._temperature(), "throttled": self._throttling()}

    def _temperature(self) -> float | None:
        try:
            return round(int(self.thermal_zone.read_text().strip()) / 1000, 1)
        except (OSError, ValueError):
            return None

    def _throttling(self) -> dict | None:
        """{"now": [flags], "since_boot": [flags]} from the firmware's bit field; None where there is none."""
        try:
            bits = int(self.throttled.read_text().strip(), 16)
        except (OSError, ValueError):
            return None
        return {"now": [name for bit, name in THROTTLE_FLAGS if bits >> bit & 1],
                "since_boot": [name for bit, name in THROTTLE_FLAGS if bits >> (bit + SINCE_BOOT_SHIFT) & 1]}
