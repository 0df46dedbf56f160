"""A throwaway but real PKI for the local control plane.

One CA signs the kube-apiserver serving certificate and any client certificates a
test wants to mint; a separate RSA key signs ServiceAccount tokens. Every
certificate carries SubjectKeyIdentifier, AuthorityKeyIdentifier and a critical
BasicConstraints, because Python >= 3.13 (and so aiohttp and kopf) verifies with
X509_STRICT and rejects certificates without them.
"""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_VALIDITY = datetime.timedelta(days=30)
_BACKDATE = datetime.timedelta(hours=1)  # tolerate small clock skew between processes
_SERVING_NAMES = ("localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc")
_SERVING_IPS = ("127.0.0.1", "10.0.0.1")  # loopback and the first service-cluster IP


@dataclass(frozen=True)
class Pki:
    """Paths of the PEM files one control plane uses."""

    directory: Path

    @property
    def ca_cert(self) -> Path:
        return self.directory / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.directory / "ca.key"

    @property
    def serving_cert(self) -> Path:
        return self.directory / "apiserver.crt"

    @property
    def serving_key(self) -> Path:
        return self.directory / "apiserver.key"

    @property
    def sa_key(self) -> Path:
        return self.directory / "sa.key"

    @property
    def sa_pub(self) -> Path:
        return self.directory / "sa.pub"


def create_pki(directory: Path) -> Pki:
    """Write a fresh CA, an apiserver serving certificate and a ServiceAccount key pair."""
    directory.mkdir(parents=True, exist_ok=True)
    pki = Pki(directory)
    ca_key = _new_key()
    ca_name = _name("nexus-local-ca")
    ca = _ca_certificate(ca_name, ca_key)
    _write_key(pki.ca_key, ca_key)
    pki.ca_cert.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    serving_key = _new_key()
    serving = _leaf_certificate(
        subject=_name("kube-apiserver"),
        public_key=serving_key.public_key(),
        ca=ca,
        ca_key=ca_key,
        usage=ExtendedKeyUsageOID.SERVER_AUTH,
        alt_names=_serving_alt_names(),
    )
    _write_key(pki.serving_key, serving_key)
    pki.serving_cert.write_bytes(serving.public_bytes(serialization.Encoding.PEM))
    sa_key = _new_key()
    _write_key(pki.sa_key, sa_key)
    pki.sa_pub.write_bytes(
        sa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return pki


def issue_client_cert(
    pki: Pki, *, user: str, groups: Sequence[str] = (), directory: Path | None = None
) -> tuple[Path, Path]:
    """Mint a client certificate for `user` in `groups`; returns (cert, key) paths.

    kube-apiserver maps CN to the user name and each O to a group, so tests can
    authenticate as any identity without a token file restart.
    """
    out = directory or pki.directory
    out.mkdir(parents=True, exist_ok=True)
    ca = x509.load_pem_x509_certificate(pki.ca_cert.read_bytes())
    ca_key = serialization.load_pem_private_key(pki.ca_key.read_bytes(), password=None)
    if not isinstance(ca_key, rsa.RSAPrivateKey):
        raise TypeError(f"{pki.ca_key} is not an RSA key")
    key = _new_key()
    attributes = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, group) for group in groups]
    subject = x509.Name([*attributes, x509.NameAttribute(NameOID.COMMON_NAME, user)])
    cert = _leaf_certificate(
        subject=subject,
        public_key=key.public_key(),
        ca=ca,
        ca_key=ca_key,
        usage=ExtendedKeyUsageOID.CLIENT_AUTH,
        alt_names=None,
    )
    stem = _file_stem(user)
    cert_path, key_path = out / f"{stem}.crt", out / f"{stem}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_key(key_path, key)
    return cert_path, key_path


def _ca_certificate(name: x509.Name, key: rsa.RSAPrivateKey) -> x509.Certificate:
    usage = _key_usage(digital_signature=True, key_encipherment=False, key_cert_sign=True)
    return (
        _builder(subject=name, issuer=name, public_key=key.public_key())
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(usage, critical=True)
        .sign(key, hashes.SHA256())
    )


def _leaf_certificate(
    *,
    subject: x509.Name,
    public_key: rsa.RSAPublicKey,
    ca: x509.Certificate,
    ca_key: rsa.RSAPrivateKey,
    usage: x509.ObjectIdentifier,
    alt_names: x509.SubjectAlternativeName | None,
) -> x509.Certificate:
    key_usage = _key_usage(digital_signature=True, key_encipherment=True, key_cert_sign=False)
    builder = (
        _builder(subject=subject, issuer=ca.subject, public_key=public_key)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(key_usage, critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    )
    if alt_names is not None:
        builder = builder.add_extension(alt_names, critical=False)
    return builder.sign(ca_key, hashes.SHA256())


def _builder(
    *, subject: x509.Name, issuer: x509.Name, public_key: rsa.RSAPublicKey
) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + _VALIDITY)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )


def _key_usage(
    *, digital_signature: bool, key_encipherment: bool, key_cert_sign: bool
) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=digital_signature,
        content_commitment=False,
        key_encipherment=key_encipherment,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=key_cert_sign,
        crl_sign=key_cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _serving_alt_names() -> x509.SubjectAlternativeName:
    names: list[x509.GeneralName] = [x509.DNSName(name) for name in _SERVING_NAMES]
    names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in _SERVING_IPS]
    return x509.SubjectAlternativeName(names)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _new_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _write_key(path: Path, key: rsa.RSAPrivateKey) -> None:
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    path.write_bytes(pem)
    path.chmod(0o600)


def _file_stem(user: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in user)
