# Sunrise and sunset computed by the firmware for every day of a year, for the CPython side to
# compare with astral:  micropython mp_sun_year.py <slot folder> <first day since 1970> <days>
#                                                  <lat> <lon> <tz_min>
# prints "day rise_s set_s" per line (seconds after local midnight, or "-" without an event)
import sys

sys.path.insert(0, sys.argv[1])
from roles import sun

first, days = int(sys.argv[2]), int(sys.argv[3])
lat, lon, tz = float(sys.argv[4]), float(sys.argv[5]), int(sys.argv[6])
for day in range(first, first + days):
    out = [str(day)]
    for rising in (True, False):
        t = sun.event(day, lat, lon, tz, rising)
        out.append("-" if t is None else str(round(t * 60)))
    print(" ".join(out))
