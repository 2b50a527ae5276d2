#!/usr/bin/env bash
# The ARM proof of issue 10 §1 (slow, by hand, never in CI): a Pi bundle made with `--target` is
# installed by its own install.sh into a Debian 12 root of the Pi's architecture (the userland of
# Raspberry Pi OS 12: glibc 2.36, CPython 3.11) that runs under qemu-user through binfmt_misc,
# and the agent installed there sends its birth to this machine's Mosquitto.
#
#   sudo bash benchmarks/pi_chroot.sh [arm64|armhf] [ROOT_DIR]
#       arm64: --target pi-arm64 (default ROOT_DIR /var/tmp/ioc-pi-arm64)
#       armhf: --target pi-armv7 (default ROOT_DIR /var/tmp/ioc-pi-armhf)
#
# Needs root, Debian's qemu-user-static, binfmt-support and debootstrap (installed if missing),
# binfmt_misc usable in this kernel, the Debian mirror of /etc/apt, and Mosquitto on
# 127.0.0.1:1883 with anonymous access (the chroot shares this machine's network). Making the
# root takes about 5 minutes (the second stage runs emulated) and is kept for the next run;
# the rest about a minute. It prints each step and ends with "proof: ok" or the step that failed.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
ARCH=${1:-arm64}
case "$ARCH" in
    arm64) TARGET=pi-arm64 QEMU=aarch64 ;;
    armhf) TARGET=pi-armv7 QEMU=arm ;;
    *) echo "usage: $0 [arm64|armhf] [ROOT_DIR]" >&2; exit 2 ;;
esac
ROOT=${2:-/var/tmp/ioc-pi-$ARCH}
MIRROR=$(grep -h -m1 -o 'http[^ ]*debian' /etc/apt/sources.list.d/debian.sources /etc/apt/sources.list 2>/dev/null \
         | head -n1 || true)
MIRROR=${MIRROR:-http://deb.debian.org/debian}
PY="$REPO/.venv/bin/python"
WORK=$(mktemp -d /tmp/ioc-pi-proof-XXXXXX)
AGENT_PID="" SUB_PID=""
step() { echo; echo "== $*"; }

cleanup() {
    [ -n "$AGENT_PID" ] && kill "$AGENT_PID" 2>/dev/null || true
    [ -n "$SUB_PID" ] && kill "$SUB_PID" 2>/dev/null || true
    for mounted in "$ROOT/dev/pts" "$ROOT/proc"; do
        mountpoint -q "$mounted" && umount "$mounted" || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT

step "tools: qemu-user-static, binfmt-support, debootstrap"
if ! command -v "qemu-$QEMU-static" >/dev/null || ! command -v debootstrap >/dev/null \
        || ! command -v update-binfmts >/dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq qemu-user-static binfmt-support debootstrap >/dev/null
fi
"qemu-$QEMU-static" --version | head -n1

step "binfmt_misc: $ARCH programs run through qemu-$QEMU"
[ -e /proc/sys/fs/binfmt_misc/register ] || mount binfmt_misc -t binfmt_misc /proc/sys/fs/binfmt_misc
update-binfmts --enable "qemu-$QEMU" 2>/dev/null || true
cat "/proc/sys/fs/binfmt_misc/qemu-$QEMU"

if [ ! -f "$ROOT/.ioc-root-ready" ]; then
    step "debootstrap bookworm $ARCH into $ROOT from $MIRROR (two stages)"
    rm -rf "$ROOT"
    debootstrap --arch="$ARCH" --foreign --variant=minbase --include=python3,python3-venv,ca-certificates \
        bookworm "$ROOT" "$MIRROR" >"$WORK/stage1.log"
    chroot "$ROOT" /debootstrap/debootstrap --second-stage >"$WORK/stage2.log"
    touch "$ROOT/.ioc-root-ready"
fi
mountpoint -q "$ROOT/proc" || mount -t proc proc "$ROOT/proc"
mkdir -p "$ROOT/dev/pts"
mountpoint -q "$ROOT/dev/pts" || mount -t devpts devpts "$ROOT/dev/pts"
echo "in the root: $(chroot "$ROOT" uname -m), $(chroot "$ROOT" python3 --version)," \
     "$(chroot "$ROOT" ldd --version | head -n1)"

step "provision pi-bundle --target $TARGET --role sim (plaintext to the host's Mosquitto)"
"$PY" -m provisioning.cli pi-bundle --out "$WORK/bundle" --site "$ARCH proof" --role sim --target "$TARGET" \
    --offline --enrollment-token unused --fleet http://127.0.0.1:9 --insecure-plaintext \
    --broker mqtt://127.0.0.1:1883
# As a registered bundle has it (no fleet here to exchange the token with); anonymous Mosquitto.
printf 'EDGE_BROKER__PASSWORD=not-checked-by-this-broker\n' >"$WORK/bundle/credentials.env"
DEVICE=$(sed -n 's/^device_id = "\(.*\)"$/\1/p' "$WORK/bundle/agent.toml")
sed -n '/^# For /p' "$WORK/bundle/requirements.lock" | cut -c1-100
ls "$WORK/bundle/wheels"
rm -rf "$ROOT/root/bundle"
cp -a "$WORK/bundle" "$ROOT/root/bundle"

step "install.sh inside the $ARCH root (as root, no IOC_EDGE_ROOT: the real paths)"
rm -rf "$ROOT/opt/ioc-edge" "$ROOT/etc/ioc-edge" "$ROOT/var/lib/ioc-edge"
time chroot "$ROOT" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root sh /root/bundle/install.sh
chroot "$ROOT" ls -l /opt/ioc-edge /opt/ioc-edge/versions
chroot "$ROOT" sh -c 'stat -c "%a %U:%G %n" /etc/ioc-edge/* /var/lib/ioc-edge /etc/systemd/system/ioc-edge.service'
chroot "$ROOT" /opt/ioc-edge/current/bin/python -c \
    "import platform, sys, pydantic_core; print(platform.machine(), '64' if sys.maxsize > 2**32 else '32', \
'bit', pydantic_core._pydantic_core.__file__.rsplit('/', 1)[-1])"
chroot "$ROOT" /opt/ioc-edge/current/bin/edge-agent --version

step "edge-agent in the $ARCH root as user ioc-edge; its birth on the host's broker"
mosquitto_sub -h 127.0.0.1 -p 1883 -v -t "ioc/v1/d/$DEVICE/birth" -t "ioc/v1/d/$DEVICE/death" \
    -t "ioc/v1/d/$DEVICE/health" >"$WORK/heard" &
SUB_PID=$!
# chroot --userspec execs the agent in this very process (no runuser in between), so the
# SIGTERM below reaches the agent as systemd's stop would.
chroot --userspec=ioc-edge:ioc-edge "$ROOT" env -i PATH=/usr/bin:/bin \
    EDGE_BROKER__PASSWORD=not-checked-by-this-broker \
    /opt/ioc-edge/current/bin/edge-agent --config /etc/ioc-edge/agent.toml >"$WORK/agent.log" 2>&1 &
AGENT_PID=$!
started=$(date +%s)
until grep -q "/birth " "$WORK/heard" && grep -q "/health " "$WORK/heard"; do
    if ! kill -0 "$AGENT_PID" 2>/dev/null; then
        echo "the agent stopped:"; cat "$WORK/agent.log"; exit 1
    fi
    if [ $(( $(date +%s) - started )) -gt 180 ]; then
        echo "no birth and health within 180 s; agent log:"; cat "$WORK/agent.log"; exit 1
    fi
    sleep 1
done
echo "birth and health heard after $(( $(date +%s) - started )) s"
kill -TERM "$AGENT_PID"
wait "$AGENT_PID" && echo "agent exit status 0 after SIGTERM" || echo "agent exit status $?"
AGENT_PID=""
sleep 2
kill "$SUB_PID"; SUB_PID=""
echo "heard on the host (topic, first 300 characters):"
cut -c1-300 "$WORK/heard"
echo "agent log (last 5 lines):"
tail -n 5 "$WORK/agent.log"
grep -q '"reason": *"shutdown"' "$WORK/heard" || { echo "no shutdown death heard"; exit 1; }
# The retained birth and death stay on the broker: clear them so other runs start clean.
mosquitto_pub -h 127.0.0.1 -p 1883 -r -n -t "ioc/v1/d/$DEVICE/birth"
mosquitto_pub -h 127.0.0.1 -p 1883 -r -n -t "ioc/v1/d/$DEVICE/death"
echo; echo "proof: ok ($DEVICE, $ARCH root $ROOT)"
