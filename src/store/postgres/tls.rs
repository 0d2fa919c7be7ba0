//! TLS for every PostgreSQL connection (the pool, LISTEN, reconnects): a tokio-postgres
//! `MakeTlsConnect` over rustls, built from `tokens.postgres.url`'s `ssl*` keys.
//!
//! Owns the handshake and its error message, which names the setting to fix (`sslmode`,
//! `sslrootcert`) but never the connection string.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect};
use tokio_rustls::TlsConnector;

use crate::config::{PgTls, SslMode};
use crate::tls::client::{self, Verify};
use crate::tls::TlsError;

/// Makes one rustls connector per connection; cheap to clone (the configuration is shared).
#[derive(Clone)]
pub struct MakeRustls {
    config: Arc<rustls::ClientConfig>,
    /// What the configuration checks, for the error message.
    setting: Arc<str>,
}

impl MakeRustls {
    /// Reads the CA and client certificate files the settings name.
    pub fn new(tls: &PgTls) -> Result<MakeRustls, TlsError> {
        let verify = match (tls.mode, &tls.root) {
            (SslMode::VerifyFull, Some(ca)) => Verify::Full(ca),
            (SslMode::VerifyCa, Some(ca)) => Verify::Chain(ca),
            _ => Verify::Nothing,
        };
        let setting = match &tls.root {
            Some(ca) if matches!(tls.mode, SslMode::VerifyCa | SslMode::VerifyFull) => {
                format!("sslmode={}, sslrootcert={ca}", tls.mode.as_str())
            }
            _ => format!("sslmode={}", tls.mode.as_str()),
        };
        Ok(MakeRustls {
            config: Arc::new(client::config(verify, tls.identity.as_ref(), &[])?),
            setting: setting.into(),
        })
    }
}

impl<S> MakeTlsConnect<S> for MakeRustls
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type TlsConnect = RustlsConnect;
    type Error = io::Error;

    fn make_tls_connect(&mut self, domain: &str) -> Result<RustlsConnect, io::Error> {
        let name = ServerName::try_from(domain.to_owned()).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("host `{domain}` is not a TLS server name: {e}"),
            )
        })?;
        Ok(RustlsConnect {
            connector: TlsConnector::from(Arc::clone(&self.config)),
            name,
            setting: Arc::clone(&self.setting),
        })
    }
}

/// One connection's handshake.
pub struct RustlsConnect {
    connector: TlsConnector,
    name: ServerName<'static>,
    setting: Arc<str>,
}

impl<S> TlsConnect<S> for RustlsConnect
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<RustlsStream<S>, io::Error>> + Send>>;

    fn connect(self, stream: S) -> Self::Future {
        Box::pin(async move {
            self.connector
                .connect(self.name, stream)
                .await
                .map(RustlsStream)
                .map_err(|e| {
                    io::Error::new(
                        e.kind(),
                        format!(
                            "{e} (tokens.postgres.url: {}; check that setting against the server's certificate)",
                            self.setting
                        ),
                    )
                })
        })
    }
}

/// A TLS connection to the server.
pub struct RustlsStream<S>(tokio_rustls::client::TlsStream<S>);

impl<S> tokio_postgres::tls::TlsStream for RustlsStream<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    fn channel_binding(&self) -> ChannelBinding {
        // No tls-server-end-point binding: SCRAM then runs without it (the client says it does
        // not support binding, which the server accepts); the certificate checks above stand.
        ChannelBinding::none()
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for RustlsStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for RustlsStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }
}
