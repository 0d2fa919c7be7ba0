//! TLS termination: certificates from PEM files, chosen by SNI, reloaded when the files change.
//!
//! Owns loading and checking certificate/key pairs (a clear error naming the file for a missing,
//! unreadable or mismatched key), the SNI resolver (exact name, then a one-label wildcard, then
//! the listener's first certificate), and the rustls server configuration: TLS 1.2 and 1.3 only
//! (rustls implements nothing older), ALPN `h2` and `http/1.1`. A reload swaps the resolver's set
//! atomically: new handshakes use the new certificates, open connections are untouched.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::server::danger::ClientCertVerifier;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::CertificatePair;

pub mod client;
mod client_auth;
pub mod expiry;

pub use client_auth::ClientCa;

/// How often certificate files are checked for changes.
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// Why certificates could not be loaded; the message names the file and what to do.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or holds no PEM item of the right kind.
    #[error("{path}: {message}")]
    File {
        /// The file.
        path: String,
        /// What is wrong and what to do.
        message: String,
    },
    /// The key does not belong to the certificate, or rustls refused the pair.
    #[error("{cert} and {key}: {message}")]
    Pair {
        /// The certificate file.
        cert: String,
        /// The key file.
        key: String,
        /// What is wrong.
        message: String,
    },
}

/// The crypto provider every TLS endpoint here uses (ring: builds with a C compiler only).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// One loaded set of certificates for a listener.
#[derive(Debug)]
struct CertSet {
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// `*.example.com` certificates by the suffix `example.com`.
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    default: Arc<CertifiedKey>,
}

/// A file and its modification time and length when last read.
type Stamp = (PathBuf, Option<SystemTime>, u64);

/// Picks a certificate by SNI; swapped whole on reload.
pub struct SniResolver {
    set: ArcSwap<CertSet>,
    pairs: ArcSwap<Vec<CertificatePair>>,
    /// The files as last read, to notice changes.
    stamps: Mutex<Vec<Stamp>>,
    /// Mutual TLS: the CA client certificates must chain to (admin listener only).
    client_ca: Option<Arc<ClientCa>>,
    /// Where expiries are reported once the server runs: the listener's name and the metrics.
    observer: OnceLock<(String, Arc<crate::metrics::Metrics>)>,
    /// The certificate files last reported, to drop the series of a removed one.
    reported: Mutex<Vec<String>>,
}

impl std::fmt::Debug for SniResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SniResolver")
            .field("pairs", &self.pairs.load())
            .field("client_ca", &self.client_ca)
            .finish_non_exhaustive()
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let set = self.set.load();
        let Some(name) = hello.server_name() else {
            return Some(Arc::clone(&set.default));
        };
        let name = name.to_ascii_lowercase();
        if let Some(c) = set.exact.get(&name) {
            return Some(Arc::clone(c));
        }
        if let Some((_, parent)) = name.split_once('.') {
            if let Some(c) = set.wildcard.get(parent) {
                return Some(Arc::clone(c));
            }
        }
        Some(Arc::clone(&set.default))
    }
}

impl SniResolver {
    /// Loads every pair; the first is the default for clients that send no matching name.
    pub fn load(pairs: &[CertificatePair]) -> Result<SniResolver, TlsError> {
        SniResolver::load_with_client_ca(pairs, None)
    }

    /// As [`SniResolver::load`], and with `client_ca`, every client must present a certificate
    /// that chains to it (the CA file is reloaded like the certificates).
    pub fn load_with_client_ca(
        pairs: &[CertificatePair],
        client_ca: Option<&Path>,
    ) -> Result<SniResolver, TlsError> {
        Ok(SniResolver {
            stamps: Mutex::new(stamps(pairs)),
            set: ArcSwap::from_pointee(load_set(pairs)?),
            pairs: ArcSwap::from_pointee(pairs.to_vec()),
            client_ca: match client_ca {
                Some(path) => Some(Arc::new(ClientCa::load(path)?)),
                None => None,
            },
            observer: OnceLock::new(),
            reported: Mutex::new(Vec::new()),
        })
    }

    /// Reports this listener's certificate expiries now and after every reload: the metric
    /// `bentogate_tls_certificate_expiry_seconds{listener, cert}` and one log line each, a
    /// warning within [`expiry::WARN_BEFORE_SECS`].
    pub fn observe(&self, listener: String, metrics: Arc<crate::metrics::Metrics>) {
        let _ = self.observer.set((listener, metrics));
        self.report();
    }

    fn report(&self) {
        let Some((listener, metrics)) = self.observer.get() else {
            return;
        };
        let now = crate::clock::now();
        let pairs = self.pairs.load_full();
        let files: Vec<String> = pairs.iter().map(|p| p.cert.display().to_string()).collect();
        if let Ok(mut before) = self.reported.lock() {
            for gone in before.iter().filter(|f| !files.contains(f)) {
                let _ = metrics
                    .tls_certificate_expiry
                    .remove_label_values(&[listener, gone]);
            }
            before.clone_from(&files);
        }
        for file in &files {
            let Some(not_after) = expiry::file_not_after(Path::new(file)) else {
                continue;
            };
            metrics
                .tls_certificate_expiry
                .with_label_values(&[listener, file])
                .set(not_after);
            let when = expiry::describe(not_after, now);
            if not_after - now < expiry::WARN_BEFORE_SECS {
                tracing::warn!(listener = %listener, cert = %file, "TLS certificate {when}; renew it");
            } else {
                tracing::info!(listener = %listener, cert = %file, "TLS certificate {when}");
            }
        }
    }

    /// The certificates' files as configured now.
    pub fn pairs(&self) -> Arc<Vec<CertificatePair>> {
        self.pairs.load_full()
    }

    /// Replaces the certificates (SIGHUP with a new list); on error the old set stays.
    pub fn replace(&self, pairs: &[CertificatePair]) -> Result<(), TlsError> {
        let now = stamps(pairs);
        let set = load_set(pairs)?;
        self.set.store(Arc::new(set));
        self.pairs.store(Arc::new(pairs.to_vec()));
        if let Ok(mut s) = self.stamps.lock() {
            *s = now;
        }
        self.report();
        Ok(())
    }

    /// Reloads if any file changed since the last load; a broken new file keeps the old set
    /// (logged). Returns true when a new set is live.
    pub fn reload_if_changed(&self) -> bool {
        if let Some(ca) = &self.client_ca {
            ca.reload_if_changed();
        }
        let pairs = self.pairs.load_full();
        let now = stamps(&pairs);
        {
            let Ok(mut seen) = self.stamps.lock() else {
                return false;
            };
            if *seen == now {
                return false;
            }
            // Recorded before loading: a broken file is reported once per change, not per poll.
            *seen = now;
        }
        match load_set(&pairs) {
            Ok(set) => {
                self.set.store(Arc::new(set));
                tracing::info!(certificates = pairs.len(), "TLS certificates reloaded");
                self.report();
                true
            }
            Err(e) => {
                tracing::error!(error = %e, "TLS certificate reload refused; keeping the previous certificates");
                false
            }
        }
    }

    /// The rustls configuration for a listener using this resolver.
    pub fn server_config(self: &Arc<Self>) -> Result<Arc<ServerConfig>, TlsError> {
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| TlsError::File {
                path: "<tls>".into(),
                message: e.to_string(),
            })?
            .with_client_cert_verifier(match &self.client_ca {
                Some(ca) => Arc::clone(ca) as Arc<dyn ClientCertVerifier>,
                None => WebPkiClientVerifier::no_client_auth(),
            })
            .with_cert_resolver(Arc::clone(self) as Arc<dyn ResolvesServerCert>);
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }

    /// Checks the files every [`POLL_INTERVAL`] until `shutdown`.
    pub async fn watch(self: Arc<Self>, shutdown: tokio::sync::watch::Receiver<bool>) {
        crate::periodic::every(POLL_INTERVAL, shutdown, || {
            let me = Arc::clone(&self);
            async move {
                let _ = tokio::task::spawn_blocking(move || me.reload_if_changed()).await;
            }
        })
        .await
    }
}

fn stamp(path: &Path) -> (Option<SystemTime>, u64) {
    std::fs::metadata(path).map_or((None, 0), |m| (m.modified().ok(), m.len()))
}

fn stamps(pairs: &[CertificatePair]) -> Vec<Stamp> {
    pairs
        .iter()
        .flat_map(|p| [p.cert.clone(), p.key.clone()])
        .map(|path| {
            let (m, l) = stamp(&path);
            (path, m, l)
        })
        .collect()
}

fn load_set(pairs: &[CertificatePair]) -> Result<CertSet, TlsError> {
    let mut exact = HashMap::new();
    let mut wildcard = HashMap::new();
    let mut default = None;
    for pair in pairs {
        let (key, names) = load_pair(pair)?;
        let key = Arc::new(key);
        for name in names {
            let name = name.to_ascii_lowercase();
            match name.strip_prefix("*.") {
                Some(parent) => wildcard.entry(parent.to_owned()),
                None => exact.entry(name),
            }
            .or_insert_with(|| Arc::clone(&key));
        }
        default.get_or_insert(key);
    }
    let default = default.ok_or_else(|| TlsError::File {
        path: "<tls>".into(),
        message: "a TLS listener needs at least one certificate".into(),
    })?;
    Ok(CertSet {
        exact,
        wildcard,
        default,
    })
}

/// Loads one pair and the DNS names its certificate is valid for.
fn load_pair(pair: &CertificatePair) -> Result<(CertifiedKey, Vec<String>), TlsError> {
    let file_error = |path: &Path, message: String| TlsError::File {
        path: path.display().to_string(),
        message,
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&pair.cert)
        .map_err(|e| file_error(&pair.cert, format!("cannot read the certificate: {e}")))?
        .collect::<Result<_, _>>()
        .map_err(|e| file_error(&pair.cert, format!("not a PEM certificate file: {e}")))?;
    if chain.is_empty() {
        return Err(file_error(
            &pair.cert,
            "no CERTIFICATE block; give the PEM certificate chain, leaf first".into(),
        ));
    }
    let key = PrivateKeyDer::from_pem_file(&pair.key).map_err(|e| {
        file_error(
            &pair.key,
            format!("cannot read a PEM private key (PKCS#8, PKCS#1 or SEC1): {e}"),
        )
    })?;
    let certified =
        CertifiedKey::from_der(chain, key, &provider()).map_err(|e| TlsError::Pair {
            cert: pair.cert.display().to_string(),
            key: pair.key.display().to_string(),
            message: format!("{e}; the key must be the certificate's own private key"),
        })?;
    let names = certified
        .end_entity_cert()
        .ok()
        .and_then(|der| {
            webpki::EndEntityCert::try_from(der)
                .ok()
                .map(|c| c.valid_dns_names().map(str::to_owned).collect::<Vec<_>>())
        })
        .unwrap_or_default();
    Ok((certified, names))
}
