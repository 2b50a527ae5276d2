# Entry point of this slot: the boot stage (/main.py) calls main(boot) with the slot's folder
# first on sys.path. Enrollment (a board flashed offline), then start-up (start.py), then the
# loop (device.py); each stage's code leaves the heap before the next one needs it.
import gc
import sys


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

    enroll.run()
    del sys.modules["enroll"]
    gc.collect()


IMPORT_ORDER = ("mqtt", "device", "link", "contract", "config", "commands", "desired", "store",
                "outbox", "hal")


def _roles(device):
    # The configured role, once start-up code has left the heap (none in safe mode).
    try:
        if not device.safe_mode:
            device.roles = __import__("roles.registry").registry.load(device.cfg.roles, device,
                                                                      device.cfg)
    except ValueError as e:  # an unknown role name
        print("fw: config error: config.json:", e)
        sys.exit(2)
    finally:
        sys.modules.pop("roles.registry", None)
        sys.modules.pop("roles", None)
    for role in device.roles:
        device.commands.handlers.update(getattr(role, "commands", {}))


def main(boot=None):
    _enroll()
    # An offer waits on flash, or an update was cut off (a power cut): this boot runs the update
    # (ota_boot.py) with the heap the device and its roles would take, then restarts.
    if boot and {"ota_offer.json", "ota_job.txt"} & set(__import__("os").listdir()):
        __import__("ota_boot").run(boot)
    for name in IMPORT_ORDER:
        gc.collect()
        __import__(name)
    gc.collect()
    # start.py runs once and is dropped (no local name kept for it: this frame lives as long as
    # the board runs) before the role is loaded
    device = __import__("start").device(boot)
    del sys.modules["start"]
    gc.collect()
    _roles(device)
    gc.collect()
    device.run()
