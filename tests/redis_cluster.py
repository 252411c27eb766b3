"""A throwaway Redis Cluster on loopback for tests: three masters, TLS only, an ACL user.

Three `redis-server --cluster-enabled yes` processes on free loopback ports, joined with
`redis-cli --cluster create`, each speaking TLS only (a self-signed certificate made with
openssl) and with the default user switched off, so a client must use TLS and the ACL user.
`stop()` shuts them down and the caller removes the folder.
"""

from __future__ import annotations

import contextlib
import random
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

USER = "cartwise"
PASSWORD = "s3cret-acl-pass"


def tools_available() -> bool:
    return all(shutil.which(t) for t in ("redis-server", "redis-cli", "openssl"))


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_ports(n: int) -> list[int]:
    """n ports whose cluster-bus ports (+10000) are free too."""
    while True:
        base = random.randrange(20000, 29000, 10)
        ports = [base + i for i in range(n)]
        if all(_free(p) and _free(p + 10000) for p in ports):
            return ports


def _make_certificate(folder: Path) -> tuple[Path, Path]:
    cert, key = folder / "redis.crt", folder / "redis.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return cert, key


@dataclass
class RedisCluster:
    folder: Path
    ports: list[int] = field(default_factory=list)
    cert: Path | None = None
    procs: list[subprocess.Popen] = field(default_factory=list)

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{p}" for p in self.ports)
        return f"rediss://{USER}:{PASSWORD}@{hosts}?ssl_ca_certs={self.cert}"

    def _cli(self, *args: str, port: int | None = None, timeout: float = 60):
        base = ["redis-cli", "--tls", "--cacert", str(self.cert), "--user", USER,
                "--pass", PASSWORD, "--no-auth-warning"]  # fmt: skip
        if port is not None:
            base += ["-h", "127.0.0.1", "-p", str(port)]
        return subprocess.run(
            [*base, *args], capture_output=True, text=True, timeout=timeout, check=False
        )

    def start(self) -> RedisCluster:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.cert, key = _make_certificate(self.folder)
        self.ports = _free_ports(3)
        for port in self.ports:
            node = self.folder / str(port)
            node.mkdir()
            self.procs.append(
                subprocess.Popen(
                    [
                        "redis-server",
                        "--bind",
                        "127.0.0.1",
                        "--port",
                        "0",
                        "--tls-port",
                        str(port),
                        "--tls-cert-file",
                        str(self.cert),
                        "--tls-key-file",
                        str(key),
                        "--tls-ca-cert-file",
                        str(self.cert),
                        "--tls-auth-clients",
                        "no",
                        "--tls-cluster",
                        "yes",
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        "nodes.conf",
                        "--dir",
                        str(node),
                        "--save",
                        "",
                        "--appendonly",
                        "no",
                        "--user",
                        "default",
                        "off",
                        "--user",
                        USER,
                        "on",
                        f">{PASSWORD}",
                        "~*",
                        "&*",
                        "+@all",
                        "--logfile",
                        str(node / "redis.log"),
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )  # fmt: skip
            )
        for port in self.ports:
            self._wait(lambda p=port: self._cli("ping", port=p).stdout.strip() == "PONG")
        created = self._cli(
            "--cluster", "create", *(f"127.0.0.1:{p}" for p in self.ports),
            "--cluster-replicas", "0", "--cluster-yes",
        )  # fmt: skip
        if created.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed: {created.stdout}")
        self._wait(
            lambda: "cluster_state:ok" in self._cli("cluster", "info", port=self.ports[0]).stdout
        )
        return self

    @staticmethod
    def _wait(ready, timeout_s: float = 30) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if ready():
                return
            time.sleep(0.2)
        raise TimeoutError("the test Redis Cluster did not come up")

    def stop(self) -> None:
        for port in self.ports:
            with contextlib.suppress(Exception):
                self._cli("shutdown", "nosave", port=port, timeout=10)
        for proc in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
