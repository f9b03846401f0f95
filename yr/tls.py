"""Session TLS on Kubernetes: the per-session key pair the driver makes, and the gRPC
credentials that pin it, so a caller only ever talks to a server holding the session's key.

Every gRPC connection of a Kubernetes session (driver, gateway or instance → instance pod) is
TLS with the session's self-signed certificate as the only trusted root, and the name checked
is the certificate's fixed SAN (pod IPs are not in it), given to gRPC with
``grpc.ssl_target_name_override``. A server at a spoofed address fails the handshake before
any metadata, so before the session token, is sent.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Any

import grpc

# Long enough for any session; the key dies with the session Secret anyway.
CERTIFICATE_LIFETIME = datetime.timedelta(days=3650)


@dataclass(frozen=True)
class PinnedServer:
    """What a client needs to pin one server: its certificate (PEM) and the SAN it carries."""

    certificate: bytes
    server_name: str

    def channel_credentials(self) -> grpc.ChannelCredentials:
        # The certificate is the only root: nothing a public CA signed is accepted.
        return grpc.ssl_channel_credentials(root_certificates=self.certificate)

    def channel_options(self) -> list[tuple[str, Any]]:
        return [("grpc.ssl_target_name_override", self.server_name)]

    def secure_channel(self, address: str, options: list[tuple[str, Any]]) -> grpc.Channel:
        return grpc.secure_channel(
            address, self.channel_credentials(), options=[*options, *self.channel_options()]
        )

    def secure_aio_channel(self, address: str, options: list[tuple[str, Any]]) -> Any:
        return grpc.aio.secure_channel(
            address, self.channel_credentials(), options=[*options, *self.channel_options()]
        )


def make_key_pair(server_name: str) -> tuple[bytes, bytes]:
    """A fresh self-signed certificate for ``server_name`` and its private key, both PEM."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, server_name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))  # tolerate clock skew
        .not_valid_after(now + CERTIFICATE_LIFETIME)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(server_name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return certificate.public_bytes(serialization.Encoding.PEM), key_pem


def server_credentials(certificate: bytes, key: bytes) -> grpc.ServerCredentials:
    return grpc.ssl_server_credentials([(key, certificate)])
