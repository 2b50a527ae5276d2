"""Run `edge-agent` as a Pi without the heavy extras would: OpenCV, numpy, pymodbus, pyserial and
httpx cannot be imported (an import of any of them raises ImportError, as on a machine that never
installed them). Usage: python tests/edge/no_extras.py --config FILE [agent options]."""

import importlib.abc
import runpy
import sys

ABSENT = ("cv2", "numpy", "pymodbus", "serial", "httpx")


class _Absent(importlib.abc.MetaPathFinder):
    def find_spec(self, name: str, path: object = None, target: object = None) -> None:
        if name.split(".")[0] in ABSENT:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


for name in list(sys.modules):  # nothing of them may be loaded already (sitecustomize, .pth files)
    if name.split(".")[0] in ABSENT:
        del sys.modules[name]
sys.meta_path.insert(0, _Absent())
sys.argv[0] = "edge-agent"
runpy.run_module("edge", run_name="__main__", alter_sys=True)
