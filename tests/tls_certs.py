"""Test certificates made with Debian's `openssl` command: a CA, an etcd server certificate and
client certificates, written to a directory the test owns (no dependency beyond openssl)."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

OPENSSL = "openssl"


def _openssl(*args: str, cwd: Path) -> None:
    proc = subprocess.run([OPENSSL, *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)}: {proc.stderr.strip()}")


def _key(path: Path) -> None:
    # EC keys are generated in milliseconds (RSA takes far longer on these machines).
    _openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", str(path), cwd=path.parent)
    os.chmod(path, 0o600)


@dataclass(frozen=True)
class Authority:
    """A self-signed CA that can sign server and client certificates."""

    directory: Path
    name: str

    @property
    def cert(self) -> str:
        return str(self.directory / f"{self.name}.crt")

    @property
    def key(self) -> str:
        return str(self.directory / f"{self.name}.key")

    def issue(self, name: str, common_name: str, *, ips: tuple[str, ...] = (), dns: tuple[str, ...] = (),
              server: bool = False, days: int = 2) -> tuple[str, str]:
        """Sign a certificate; returns (cert path, key path). `days` may be negative (expired)."""
        d = self.directory
        key = d / f"{name}.key"
        csr = d / f"{name}.csr"
        crt = d / f"{name}.crt"
        ext = d / f"{name}.ext"
        _key(key)
        _openssl("req", "-new", "-key", str(key), "-subj", f"/CN={common_name}", "-out", str(csr), cwd=d)
        san = [f"IP:{ip}" for ip in ips] + [f"DNS:{n}" for n in dns]
        lines = [
            "basicConstraints=critical,CA:FALSE",
            "keyUsage=critical,digitalSignature,keyEncipherment",
            "extendedKeyUsage=" + ("serverAuth,clientAuth" if server else "clientAuth"),
        ]
        if san:
            lines.append("subjectAltName=" + ",".join(san))
        ext.write_text("\n".join(lines) + "\n")
        if days > 0:
            _openssl("x509", "-req", "-in", str(csr), "-CA", self.cert, "-CAkey", self.key, "-CAcreateserial",
                     "-days", str(days), "-extfile", str(ext), "-out", str(crt), cwd=d)
        else:
            # An expired certificate: openssl x509 cannot back-date, `openssl ca` can.
            self._issue_expired(csr, ext, crt)
        return str(crt), str(key)

    def _issue_expired(self, csr: Path, ext: Path, crt: Path) -> None:
        d = self.directory
        db = d / "ca-db"
        db.mkdir(exist_ok=True)
        (db / "index.txt").touch()
        serial = db / "serial"
        if not serial.exists():
            serial.write_text("1000\n")
        conf = db / "ca.cnf"
        conf.write_text(
            "[ca]\ndefault_ca=test\n[test]\n"
            f"dir={db}\ndatabase={db}/index.txt\nserial={db}/serial\nnew_certs_dir={db}\n"
            f"certificate={self.cert}\nprivate_key={self.key}\n"
            "default_md=sha256\npolicy=any\nunique_subject=no\n"
            "[any]\ncommonName=supplied\n"
        )
        _openssl("ca", "-batch", "-config", str(conf), "-in", str(csr), "-out", str(crt), "-notext",
                 "-startdate", "20200101000000Z", "-enddate", "20200102000000Z", "-extfile", str(ext), cwd=d)


def authority(directory: Path, name: str = "ca") -> Authority:
    """Create a self-signed CA in `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    ca = Authority(directory, name)
    _key(Path(ca.key))
    _openssl("req", "-x509", "-new", "-key", ca.key, "-subj", f"/CN=calico-test-{name}", "-days", "2",
             "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
             "-out", ca.cert, cwd=directory)
    return ca
