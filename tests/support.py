"""Test helpers: seeded data, brute-force ground truth, a fake embedder, a server process
and its metrics (imported by tests)."""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
import subprocess
import sys
import threading
import urllib.request
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from indexer.ann import normalize
from indexer.records import AdRecord, Targeting

D = 32


class HashEmbedder:
    """Deterministic bag-of-words embedder: texts sharing words get similar vectors.

    Fast and model-free, for unit tests; the real model is exercised by the slow tests.
    """

    model_name = "hash-bow"

    def __init__(self, dimension: int = D):
        self._d = dimension

    @property
    def dimension(self) -> int:
        return self._d

    def _word(self, word: str) -> np.ndarray:
        return (
            np.random.default_rng(zlib.crc32(word.encode()))
            .standard_normal(self._d)
            .astype(np.float32)
        )

    def encode(self, texts: Sequence[str], *, progress: bool = False) -> np.ndarray:
        out = np.zeros((len(texts), self._d), dtype=np.float32)
        for i, text in enumerate(texts):
            for word in text.lower().split():
                out[i] += self._word(word)
        return normalize(out)


def clustered_vectors(n: int, d: int = D, *, n_clusters: int = 20, seed: int = 1338) -> np.ndarray:
    """Seeded unit vectors around random centres: enough structure for IVF to be meaningful."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_clusters, d))
    x = centres[rng.integers(0, n_clusters, n)] + 0.6 * rng.standard_normal((n, d))
    return normalize(x.astype(np.float32))


def make_records(n: int, *, paused_every: int = 10, seed: int = 5) -> list[AdRecord]:
    """Records whose text is a few words drawn from a small vocabulary (for HashEmbedder)."""
    rng = np.random.default_rng(seed)
    vocab = [f"w{i}" for i in range(200)]
    out = []
    for i in range(n):
        words = " ".join(rng.choice(vocab, size=6))
        out.append(
            AdRecord(
                ad_id=f"ad-{i:05d}",
                advertiser_id=f"adv-{i % 37:03d}",
                campaign_id=f"cmp-{i % 91:03d}",
                title=words,
                description=f"about {words}",
                creative_text="shop now",
                targeting=Targeting(countries=("US",)) if i % 3 == 0 else Targeting(),
                status="paused" if paused_every and i % paused_every == 7 else "active",
            )
        )
    return out


class _Process:
    """An ``adindex`` server command in a subprocess (JSON logs, a free port unless ``args``
    name one), started and ready once a stderr line says ``ready``. ``lines`` holds its log lines and keeps growing."""

    def __init__(self, argv: Sequence[str], args: Sequence[str], ready: str):
        # ``args`` come last: a caller's --port (a restarted leaf keeps its port) wins.
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "retrieval.cli",
                *argv,
                "--port",
                "0",
                "--log-format",
                "json",
                *args,
            ],
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stderr is not None
        self.lines: list[str] = []
        self.port = 0
        self.metrics_port: int | None = None
        for line in self.proc.stderr:
            self.lines.append(line)
            if match := re.search(r"Listening on 127\.0\.0\.1:(\d+)", line):
                self.port = int(match.group(1))
            if match := re.search(r"Metrics on http://127\.0\.0\.1:(\d+)/metrics", line):
                self.metrics_port = int(match.group(1))
            if ready in line:
                break
        if not self.port or self.proc.poll() is not None:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"{argv[0]} did not get to {ready!r}: {''.join(self.lines)}")
        self._reader = threading.Thread(
            target=lambda: self.lines.extend(self.proc.stderr or ()), daemon=True
        )
        self._reader.start()

    def close(self) -> None:
        """Kill the process if it still runs, and collect its output."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self._reader.join(timeout=5)
        assert self.proc.stderr is not None
        self.proc.stderr.close()


class ServerProcess(_Process):
    """``adindex serve``, started and ready to serve."""

    def __init__(self, index: Path, *args: str):
        super().__init__(["serve", "--index", str(index)], args, "Serving index")


def scrape_metrics(port: int) -> str:
    """The Prometheus text a server's metrics endpoint serves."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text: str = response.read().decode()
        return text


def metric_value(text: str, name: str, **labels: str) -> float:
    """The value of one series in Prometheus text format (labels in any order)."""
    for line in text.splitlines():
        series, _, value = line.rpartition(" ")
        if series.split("{")[0] != name:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', series))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(value)
    raise AssertionError(f"no {name}{labels} in the metrics")


class RootProcess(_Process):
    """``adindex root`` over leaves on loopback ports, started and SERVING (every leaf
    answered and holds one version)."""

    def __init__(self, leaf_ports: Sequence[int], *args: str):
        leaves = ",".join(f"127.0.0.1:{p}" for p in leaf_ports)
        super().__init__(["root", "--leaves", leaves], args, "Health SERVING")


def certificate(tmp: Path) -> tuple[Path, Path]:
    """A self-signed certificate for localhost / 127.0.0.1 and its key, as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp / "server.crt", tmp / "server.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path
