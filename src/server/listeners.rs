//! Binding the listeners before anything serves, so tests bind `127.0.0.1:0` and learn the ports,
//! and a missing or mismatched certificate fails start with its file named.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;

use super::StartError;
use crate::config::Config;
use crate::tls::SniResolver;

/// A bound client-facing listener and, for TLS, its certificates.
pub struct ProxyListener {
    pub(super) listener: TcpListener,
    pub(super) tls: Option<Arc<SniResolver>>,
}

/// Bound listeners, so callers (tests) can bind `127.0.0.1:0` and learn the ports first.
pub struct Listeners {
    /// Client-facing listeners, in configuration order.
    pub proxy: Vec<ProxyListener>,
    /// The admin listener.
    pub admin: TcpListener,
    /// The admin listener's certificates (and client CA), when `admin.tls` is set.
    pub admin_tls: Option<Arc<SniResolver>>,
    /// The probe listener (`admin.probes`), if configured.
    pub probes: Option<TcpListener>,
}

impl Listeners {
    /// Binds every address in the configuration and loads the TLS listeners' certificates, so
    /// a missing or mismatched key fails start with the file named.
    pub async fn bind(config: &Config) -> Result<Listeners, StartError> {
        let bind = |address: SocketAddr| async move {
            TcpListener::bind(address)
                .await
                .map_err(|source| StartError::Bind { address, source })
        };
        let mut proxy = Vec::with_capacity(config.listeners.len());
        for l in &config.listeners {
            let tls = match &l.tls {
                Some(pairs) => Some(Arc::new(SniResolver::load(pairs)?)),
                None => None,
            };
            proxy.push(ProxyListener {
                listener: bind(l.address).await?,
                tls,
            });
        }
        let admin = bind(config.admin).await?;
        let admin_tls = match &config.admin_tls {
            Some(t) => Some(Arc::new(SniResolver::load_with_client_ca(
                &t.certificates,
                t.client_ca.as_deref(),
            )?)),
            None => None,
        };
        let probes = match config.probes {
            Some(address) => Some(bind(address).await?),
            None => None,
        };
        Ok(Listeners {
            proxy,
            admin,
            admin_tls,
            probes,
        })
    }

    /// The proxy listeners' actual addresses.
    pub fn proxy_addrs(&self) -> Vec<SocketAddr> {
        self.proxy
            .iter()
            .filter_map(|l| l.listener.local_addr().ok())
            .collect()
    }

    /// The admin listener's actual address.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.local_addr().ok()
    }

    /// The probe listener's actual address, if there is one.
    pub fn probes_addr(&self) -> Option<SocketAddr> {
        self.probes.as_ref().and_then(|l| l.local_addr().ok())
    }
}
