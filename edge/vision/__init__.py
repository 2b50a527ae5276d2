"""Image processing for the edge roles, free of MQTT and asyncio: runs in tests and benchmarks.

- `gate`: the motion gate (downscaled luma, adaptive background, masks, recalibration);
- `episodes`: gate output over time -> motion events (start / update / end) per zone;
- `detector`: the optional stage after the gate (a plug-in loaded by import path);
- `jpeg`: snapshot encoding.
"""
