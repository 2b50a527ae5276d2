# Entry point of this slot: the boot stage (/main.py) calls main(boot) with the slot's folder
# first on sys.path.
#
# Compiling a module from source takes several times its final size in transient heap. On a
# 64 KB heap that only fits while little else is loaded, so the modules are imported largest
# first, collecting after each. (Precompiled .mpy files need no such care.)
import gc
import sys

IMPORT_ORDER = ("mqtt", "device", "link", "contract", "config", "commands", "desired", "store",
                "outbox", "hal")


def _enroll():
    # A board flashed offline trades its enrollment token for credentials first (enroll.py).
    # enroll.py is imported only then: loading it on every boot would cost the light role its
    # last free block on a 64 KB heap.
    try:
        with open("config.json") as f:
            asks = '"enrollment_token"' in f.read()
    except OSError:
        return  # config.load() reports it
    if not asks:
        return
    import enroll

    def board():
        import config
        import hal

        return hal.load(config.load())

    enroll.run(board)
    del sys.modules["enroll"]
    gc.collect()


def main(boot=None):
    _enroll()
    for name in IMPORT_ORDER:
        gc.collect()
        __import__(name)
    gc.collect()
    import device
    device.main(boot)
