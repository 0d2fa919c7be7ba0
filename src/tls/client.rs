//! Client-side TLS for bentogate's own outbound hops: the introspection source, the PostgreSQL
//! source and the remote CLI.
//!
//! Owns building a rustls client configuration from a trust anchor ([`CaSource`]: a PEM file or
//! the platform's roots), how much of the server's certificate is checked ([`Verify`]) and an
//! optional client certificate. Must never turn a check off silently: skipping the hostname or
//! the whole chain is only reachable through the PostgreSQL `sslmode` values that mean exactly
//! that in libpq (`verify-ca`, `require`, `prefer`).

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use rustls_pki_types::pem::PemObject;

use super::{provider, TlsError};
use crate::config::{CaSource, CertificatePair};

/// How much of the server's certificate a client checks.
#[derive(Debug, Clone, Copy)]
pub enum Verify<'a> {
    /// Chain to the anchors and the name connected to (the only choice outside PostgreSQL).
    Full(&'a CaSource),
    /// Chain to the anchors, any name (libpq's `verify-ca`).
    Chain(&'a CaSource),
    /// Nothing but the handshake's own signatures (libpq's `require` and `prefer`: encryption
    /// against passive listening, no protection against an active impostor).
    Nothing,
}

/// A rustls client configuration: TLS 1.2 and 1.3, the given check, the given client
/// certificate; `alpn` as the hop needs (none for PostgreSQL).
pub fn config(
    verify: Verify<'_>,
    identity: Option<&CertificatePair>,
    alpn: &[&[u8]],
) -> Result<ClientConfig, TlsError> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsError::File {
            path: "<tls>".into(),
            message: e.to_string(),
        })?;
    let builder = match verify {
        Verify::Full(ca) => builder.with_root_certificates(roots(ca)?),
        Verify::Chain(ca) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyName(webpki(ca)?))),
        Verify::Nothing => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Unchecked)),
    };
    let mut config = match identity {
        None => builder.with_no_client_auth(),
        Some(pair) => {
            let (chain, key) = read_pair(pair)?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| TlsError::Pair {
                    cert: pair.cert.display().to_string(),
                    key: pair.key.display().to_string(),
                    message: format!("{e}; the key must be the certificate's own private key"),
                })?
        }
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

/// A configuration for a client that speaks plain HTTP only (no anchors: every TLS server is
/// refused), for connectors that need one.
pub fn empty() -> ClientConfig {
    ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map(|b| {
            b.with_root_certificates(RootCertStore::empty())
                .with_no_client_auth()
        })
        .unwrap_or_else(|_| {
            ClientConfig::builder()
                .with_root_certificates(RootCertStore::empty())
                .with_no_client_auth()
        })
}

/// An error and its causes on one line (`client error (Connect): invalid peer certificate:
/// UnknownIssuer`): hyper's own message hides why a handshake failed.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let next = c.to_string();
        if !s.contains(&next) {
            s = format!("{s}: {next}");
        }
        cause = c.source();
    }
    s
}

/// The trust anchors: every certificate in the PEM file, or the platform's roots.
pub fn roots(ca: &CaSource) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    match ca {
        CaSource::File(path) => {
            let (added, _) = roots.add_parsable_certificates(read_certs(path)?);
            if added == 0 {
                return Err(TlsError::File {
                    path: path.display().to_string(),
                    message: "no usable CA certificate in it; give the PEM CA that signed the server's certificate".into(),
                });
            }
        }
        CaSource::System => {
            let found = rustls_native_certs::load_native_certs();
            let (added, _) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err(TlsError::File {
                    path: "<system roots>".into(),
                    message: format!(
                        "no platform root certificate found ({}); give a CA file instead",
                        found
                            .errors
                            .first()
                            .map_or("none installed".to_owned(), |e| e.to_string())
                    ),
                });
            }
        }
    }
    Ok(roots)
}

/// Every certificate in a PEM file; an empty or unreadable file is an error naming it.
pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bad = |message: String| TlsError::File {
        path: path.display().to_string(),
        message,
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .map_err(|e| bad(format!("cannot read the certificate: {e}")))?
        .collect::<Result<_, _>>()
        .map_err(|e| bad(format!("not a PEM certificate file: {e}")))?;
    if certs.is_empty() {
        return Err(bad("no CERTIFICATE block in it".into()));
    }
    Ok(certs)
}

fn read_pair(
    pair: &CertificatePair,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
    let chain = read_certs(&pair.cert)?;
    let key = PrivateKeyDer::from_pem_file(&pair.key).map_err(|e| TlsError::File {
        path: pair.key.display().to_string(),
        message: format!("cannot read a PEM private key (PKCS#8, PKCS#1 or SEC1): {e}"),
    })?;
    Ok((chain, key))
}

fn webpki(ca: &CaSource) -> Result<Arc<WebPkiServerVerifier>, TlsError> {
    WebPkiServerVerifier::builder_with_provider(Arc::new(roots(ca)?), provider())
        .build()
        .map_err(|e| TlsError::File {
            path: "<tls>".into(),
            message: e.to_string(),
        })
}

/// libpq's `verify-ca`: the chain must lead to the anchors; the name is not compared.
#[derive(Debug)]
struct AnyName(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for AnyName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// libpq's `require`/`prefer`: any certificate; the handshake signatures are still checked, so
/// the session is encrypted to whoever holds the presented certificate's key.
#[derive(Debug)]
struct Unchecked;

impl ServerCertVerifier for Unchecked {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &provider().signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &provider().signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}
