# Sunrise and sunset on the device (NOAA's solar equations, as in Meeus' Astronomical Algorithms).
# Pure code: runs on MicroPython and CPython alike.
#
# Written for single-precision floats (an ESP32's MicroPython): no absolute Julian day and no
# Unix time ever becomes a float. Time is counted in days since 2000-01-01 (an integer for the
# date, a small fraction for the time of day), every angle is reduced below 360 degrees before
# it meets a sine, and results are minutes after local midnight (< 1440), where a float32 still
# resolves well under a second.
import math

RAD = math.pi / 180
# The sun's upper limb on the horizon: its centre 16' (apparent radius) plus 0.5224 degrees of
# refraction below it, the horizon astral uses (NOAA's round 0.833 differs by ~40 s at 64 N).
COS_ZENITH = math.cos(90.78911 * RAD)
DAYS_1970_TO_2000 = 10957


def _sun(d):
    # Declination (radians) and equation of time (minutes) at d days after 2000-01-01 12:00 UT.
    jc = d / 36525  # Julian centuries: only in the slow terms
    l0 = (280.46646 + 0.98564736 * d) % 360 * RAD
    m = (357.52911 + 0.98560028 * d) % 360 * RAD
    e = 0.016708634 - 0.000042037 * jc
    c = (math.sin(m) * (1.914602 - 0.004817 * jc) + math.sin(2 * m) * (0.019993 - 0.000101 * jc)
         + math.sin(3 * m) * 0.000289)
    omega = (125.04 - 0.052953775 * d) % 360 * RAD
    lam = l0 + (c - 0.00569 - 0.00478 * math.sin(omega)) * RAD
    eps = (23.0 + (26.0 + (21.448 - 46.815 * jc) / 60) / 60 + 0.00256 * math.cos(omega)) * RAD
    decl = math.asin(math.sin(eps) * math.sin(lam))
    y = math.tan(eps / 2)
    y *= y
    eqt = (y * math.sin(2 * l0) - 2 * e * math.sin(m) + 4 * e * y * math.sin(m) * math.cos(2 * l0)
           - 0.5 * y * y * math.sin(4 * l0) - 1.25 * e * e * math.sin(2 * m)) * 4 / RAD
    return decl, eqt


def event(day, lat, lon, tz_min, rising):
    # Sunrise (rising=True) or sunset on the local date `day` (days since 1970-01-01), as
    # minutes after local midnight (a float), or None when the sun does not cross the horizon
    # that day (polar day or night). lat, lon in degrees (east positive), tz_min = UTC offset.
    n = day - DAYS_1970_TO_2000
    t = (360 if rising else 1080) - tz_min  # first guess, minutes after 00:00 UTC of that date
    sin_lat = math.sin(lat * RAD)
    cos_lat = math.cos(lat * RAD)
    for _ in range(3):
        decl, eqt = _sun(n - 0.5 + t / 1440)
        cos_h = (COS_ZENITH - sin_lat * math.sin(decl)) / (cos_lat * math.cos(decl))
        if cos_h < -1 or cos_h > 1:
            return None
        ha = math.acos(cos_h) / RAD
        t = 720 - 4 * (lon + ha if rising else lon - ha) - eqt
    return t + tz_min
