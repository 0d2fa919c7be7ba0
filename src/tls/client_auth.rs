//! Mutual TLS on a listener: the client certificate must chain to a CA file, reloaded when the
//! file changes. Handshakes in progress keep the verifier they started with.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};

use super::{provider, stamp, TlsError};
use crate::config::CaSource;

/// A client-certificate verifier over a CA file, swapped whole when the file changes.
#[derive(Debug)]
pub struct ClientCa {
    path: PathBuf,
    current: ArcSwap<Arc<dyn ClientCertVerifier>>,
    seen: Mutex<(Option<std::time::SystemTime>, u64)>,
}

impl ClientCa {
    /// Reads the CA file; an unreadable or empty one is an error naming it.
    pub fn load(path: &Path) -> Result<ClientCa, TlsError> {
        Ok(ClientCa {
            path: path.to_owned(),
            seen: Mutex::new(stamp(path)),
            current: ArcSwap::from_pointee(verifier(path)?),
        })
    }

    /// Reloads when the file changed; a broken new file keeps the old CA (logged).
    pub fn reload_if_changed(&self) {
        let now = stamp(&self.path);
        {
            let Ok(mut seen) = self.seen.lock() else {
                return;
            };
            if *seen == now {
                return;
            }
            *seen = now;
        }
        match verifier(&self.path) {
            Ok(v) => {
                self.current.store(Arc::new(v));
                tracing::info!(file = %self.path.display(), "client CA reloaded");
            }
            Err(e) => {
                tracing::error!(error = %e, "client CA reload refused; keeping the previous CA")
            }
        }
    }
}

fn verifier(path: &Path) -> Result<Arc<dyn ClientCertVerifier>, TlsError> {
    let roots = super::client::roots(&CaSource::File(path.to_owned()))?;
    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
        .build()
        .map_err(|e| TlsError::File {
            path: path.display().to_string(),
            message: format!("not usable as a client CA: {e}"),
        })
}

impl ClientCertVerifier for ClientCa {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // Hints are optional (RFC 8446 4.2.4); a swapped CA cannot lend its borrowed list.
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.current
            .load()
            .verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.current
            .load()
            .verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.current
            .load()
            .verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.current.load().supported_verify_schemes()
    }
}
