"""The firmware's SDS011 frame builder, loaded from the slot for the CPython side of the tests."""

import importlib.util

from tests.firmware.support import SLOT

_spec = importlib.util.spec_from_file_location("fw_sds011", SLOT / "roles" / "sds011.py")
assert _spec is not None and _spec.loader is not None
_sds011 = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_sds011)
sds011_frame = _sds011.frame
