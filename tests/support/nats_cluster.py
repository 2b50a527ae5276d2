"""A private 3-node NATS cluster with JetStream and the MQTT gateway, on free loopback ports.

Each node has its own folder (config, JetStream store, pid file) under the test's workdir. The
nodes share one authorization include file (`auth.conf`), the file the fleet's NATS accounts
(fleet/broker_auth/nats.py) rewrite; until the fleet writes it, it holds only the fleet's account.
MQTT retained messages and sessions are JetStream streams replicated on all three nodes
(`mqtt { stream_replicas: 3 }`), so a node can die and the other two keep quorum.
"""

import json
import os
import signal
import subprocess
import time
from pathlib import Path

from fleet.broker_auth.nats import render_auth
from tests.support.mosquitto import free_port, wait_port

NATS_SERVER = "/usr/sbin/nats-server"


class NatsNode:
    def __init__(self, cluster: "NatsCluster", index: int) -> None:
        self.cluster = cluster
        self.name = f"n{index + 1}"
        self.dir = cluster.workdir / self.name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.cluster_port = free_port()
        self.mqtt_port = free_port()
        self.http_port = free_port()
        self.pid_file = self.dir / "nats.pid"
        self.conf = self.dir / "nats.conf"
        self.log = self.dir / "nats.log"
        self.process: subprocess.Popen[bytes] | None = None

    def write_conf(self, route_ports: list[int]) -> None:
        routes = ", ".join(f"nats-route://127.0.0.1:{p}" for p in route_ports if p != self.cluster_port)
        self.conf.write_text(
            f"server_name: {self.name}\n"
            f"listen: 127.0.0.1:{self.port}\n"
            f"http: 127.0.0.1:{self.http_port}\n"
            f"pid_file: {json.dumps(str(self.pid_file))}\n"
            f"jetstream {{ store_dir: {json.dumps(str(self.dir / 'js'))} }}\n"
            f"cluster {{ name: ioc, listen: 127.0.0.1:{self.cluster_port}, routes: [{routes}] }}\n"
            f"mqtt {{ listen: 127.0.0.1:{self.mqtt_port}, stream_replicas: 3 }}\n"
            f"include {json.dumps(os.path.relpath(self.cluster.auth_file, self.dir))}\n")

    @property
    def mqtt_url(self) -> str:
        return f"mqtt://127.0.0.1:{self.mqtt_port}"

    def start(self) -> None:
        """Start the node; nothing when it runs already (a second process would be orphaned: a
        test's `finally` that starts a node it never got to kill left one running after the suite)."""
        if self.process is not None and self.process.poll() is None:
            return
        with self.log.open("ab") as log:
            self.process = subprocess.Popen([NATS_SERVER, "-c", str(self.conf)], stdout=log,
                                            stderr=subprocess.STDOUT)

    def kill(self) -> None:
        """SIGKILL: the node dies mid-work, as a crashed machine would."""
        if self.process is not None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)
            self.process = None
        wait_port(self.mqtt_port, up=False)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
            self.process = None

    def ready(self) -> bool:
        """JetStream on this node answers and the MQTT gateway accepts connections."""
        import urllib.request
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/healthz", timeout=1) as reply:
                ok = reply.status == 200
        except OSError:
            return False
        if not ok:
            return False
        try:
            wait_port(self.mqtt_port, timeout=0.2)
        except TimeoutError:
            return False
        return True


class NatsCluster:
    """Three nats-server processes routed to each other; `fleet` is the fleet's (user, password)."""

    def __init__(self, workdir: Path, *, fleet: tuple[str, str] = ("ioc-fleet", "fleet-test-password-123")) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.fleet = fleet
        self.auth_file = workdir / "auth.conf"
        self.state_file = workdir / "accounts.json"
        self.auth_file.write_text(render_auth(fleet[0], fleet[1], {}))
        self.auth_file.chmod(0o600)
        self.nodes = [NatsNode(self, i) for i in range(3)]
        for node in self.nodes:
            node.write_conf([n.cluster_port for n in self.nodes])

    @property
    def mqtt_urls(self) -> list[str]:
        return [n.mqtt_url for n in self.nodes]

    def fleet_url(self, node: int = 0) -> str:
        return f"mqtt://{self.fleet[0]}:{self.fleet[1]}@127.0.0.1:{self.nodes[node].mqtt_port}"

    @property
    def pid_files(self) -> list[Path]:
        return [n.pid_file for n in self.nodes]

    def start(self, timeout: float = 90.0) -> None:
        for node in self.nodes:
            if node.process is None:
                node.start()
        deadline = time.monotonic() + timeout
        while not all(n.ready() and self._mqtt_ready(n) for n in self.nodes if n.process is not None):
            if time.monotonic() > deadline:
                logs = "\n".join(n.log.read_text()[-2000:] for n in self.nodes)
                raise TimeoutError(f"NATS cluster not ready within {timeout}s:\n{logs}")
            time.sleep(0.2)

    def _mqtt_ready(self, node: NatsNode) -> bool:
        """A QoS 1 subscription works on the node: JetStream has a leader and the MQTT streams
        exist (the first MQTT connection of an account creates them, which takes a while)."""
        import threading

        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        granted = threading.Event()
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"ioc.ready-{node.name}", clean_session=True,
                             protocol=mqtt.MQTTv311)
        client.username_pw_set(*self.fleet)
        client.on_connect = lambda c, u, f, reason, p: None if reason.is_failure else c.subscribe("ioc/v1/d/+/x", 1)
        client.on_subscribe = lambda c, u, mid, codes, p: granted.set() if codes and not codes[0].is_failure else None
        try:
            client.connect("127.0.0.1", node.mqtt_port, 10)
        except OSError:
            return False
        client.loop_start()
        try:
            return granted.wait(10)
        finally:
            client.disconnect()
            client.loop_stop()

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def __enter__(self) -> "NatsCluster":
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
