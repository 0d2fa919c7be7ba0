//! Transport: TLS termination (SNI, ALPN, versions, reload, start-up errors), https and h2
//! upstreams, WebSockets, streaming over HTTP/1.1 and HTTP/2, reloads and shutdown under load,
//! and the connection limits. Certificates are generated here with rcgen.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bentogate::config::Config;
use bentogate::server::Running;
use bytes::Bytes;
use common::*;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A test CA and the leaf certificates it signs, written as PEM files.
struct Pki {
    ca: rcgen::Certificate,
    ca_key: KeyPair,
    dir: PathBuf,
}

/// One leaf: its files and DER (to recognise it on the wire).
struct Leaf {
    cert: PathBuf,
    key: PathBuf,
    der: Vec<u8>,
}

impl Pki {
    fn new(dir: &Path) -> Pki {
        let ca_key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = params.self_signed(&ca_key).unwrap();
        std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
        Pki {
            ca,
            ca_key,
            dir: dir.to_owned(),
        }
    }

    fn ca_file(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// Issues a certificate for `names`, written to `<file>.crt` / `<file>.key`.
    fn leaf(&self, file: &str, names: &[&str]) -> Leaf {
        let key = KeyPair::generate().unwrap();
        let params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        let cert = params.signed_by(&key, &self.ca, &self.ca_key).unwrap();
        let leaf = Leaf {
            cert: self.dir.join(format!("{file}.crt")),
            key: self.dir.join(format!("{file}.key")),
            der: cert.der().to_vec(),
        };
        // Write the key first and the certificate last: a watcher that reads in between sees
        // a mismatched pair and must keep the old one.
        std::fs::write(&leaf.key, key.serialize_pem()).unwrap();
        std::fs::write(&leaf.cert, cert.pem()).unwrap();
        leaf
    }

    fn client_config(&self, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from(self.ca.der().to_vec()))
            .unwrap();
        let mut c = rustls::ClientConfig::builder_with_provider(bentogate::tls::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        c.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(c)
    }
}

type Tls = tokio_rustls::client::TlsStream<TcpStream>;

/// Opens a TLS connection to `addr` asking for `sni`.
async fn tls_connect(pki: &Pki, addr: SocketAddr, sni: &str, alpn: &[&[u8]]) -> Tls {
    let connector = tokio_rustls::TlsConnector::from(pki.client_config(alpn));
    let tcp = TcpStream::connect(addr).await.unwrap();
    connector
        .connect(ServerName::try_from(sni.to_owned()).unwrap(), tcp)
        .await
        .unwrap()
}

/// Accepts any server certificate: to see which one an unmatched SNI name gets.
#[derive(Debug)]
struct AnyCertificate;

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }
    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        bentogate::tls::provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

async fn presented_unverified(addr: SocketAddr, sni: &str) -> Vec<u8> {
    let config = rustls::ClientConfig::builder_with_provider(bentogate::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate))
        .with_no_client_auth();
    let tcp = TcpStream::connect(addr).await.unwrap();
    let conn = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from(sni.to_owned()).unwrap(), tcp)
        .await
        .unwrap();
    presented(&conn)
}

fn presented(conn: &Tls) -> Vec<u8> {
    conn.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

/// Sends one GET over an established HTTP/1.1 or h2 connection; returns status and body.
async fn get_over<S>(sender: &mut S, path: &str, token: Option<&str>) -> (StatusCode, String)
where
    S: Sender,
{
    let mut req = Request::get(path).header("host", "a.test");
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let res = sender
        .send(req.body(Full::new(Bytes::new())).unwrap())
        .await;
    let status = res.status();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

trait Sender {
    async fn send(&mut self, req: Request<Full<Bytes>>) -> http::Response<hyper::body::Incoming>;
}

impl Sender for hyper::client::conn::http1::SendRequest<Full<Bytes>> {
    async fn send(&mut self, req: Request<Full<Bytes>>) -> http::Response<hyper::body::Incoming> {
        self.send_request(req).await.unwrap()
    }
}

impl Sender for hyper::client::conn::http2::SendRequest<Full<Bytes>> {
    async fn send(
        &mut self,
        mut req: Request<Full<Bytes>>,
    ) -> http::Response<hyper::body::Incoming> {
        *req.uri_mut() = format!("https://a.test{}", req.uri()).parse().unwrap();
        self.send_request(req).await.unwrap()
    }
}

async fn h1_over<I>(io: I) -> hyper::client::conn::http1::SendRequest<Full<Bytes>>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .unwrap();
    tokio::spawn(conn);
    sender
}

async fn h2_over<I>(io: I) -> hyper::client::conn::http2::SendRequest<Full<Bytes>>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(io))
            .await
            .unwrap();
    tokio::spawn(conn);
    sender
}

/// Waits until the gateway has loaded at least `n` tokens (the file is polled every 200 ms).
async fn until_tokens(g: &Gate, n: f64) {
    eventually(Duration::from_secs(3), || async {
        metric(&metrics(g.admin).await, "bentogate_tokens_loaded") >= n
    })
    .await;
}

/// A gateway whose first listener is TLS with the given certificates.
async fn tls_gate(dir: tempfile::TempDir, leaves: &[&Leaf], u: SocketAddr) -> Gate {
    tls_gate_listeners(dir, &[leaves], u).await
}

/// A gateway with one TLS listener per entry of `listeners`, each with its certificates, in
/// order (`proxy_addrs[i]`).
async fn tls_gate_listeners(dir: tempfile::TempDir, listeners: &[&[&Leaf]], u: SocketAddr) -> Gate {
    let blocks: Vec<String> = listeners
        .iter()
        .map(|leaves| {
            let certs: String = leaves
                .iter()
                .map(|l| {
                    format!(
                        "        - {{ cert: \"{}\", key: \"{}\" }}\n",
                        l.cert.display(),
                        l.key.display()
                    )
                })
                .collect();
            format!("  - address: \"127.0.0.1:0\"\n    tls:\n      certificates:\n{certs}")
        })
        .collect();
    let text = format!(
        "listeners:\n{}admin: {{address: \"127.0.0.1:0\"}}\nlog: {{access: false}}\ndeployments:\n{}",
        blocks.concat(),
        deployment("a", u, "protected", "")
    );
    let config = Config::parse(&text, "test.yaml", dir.path()).unwrap();
    let tokens = config.tokens.file.clone();
    let running = Running::start(config).await.unwrap();
    Gate {
        addr: running.proxy_addrs[0],
        admin: running.admin_addr,
        running,
        dir,
        tokens,
    }
}

#[tokio::test]
async fn tls_picks_the_certificate_by_sni_and_speaks_h2_and_http1() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let a = pki.leaf("a", &["a.test"]);
    let b = pki.leaf("b", &["b.test", "*.wild.test"]);
    let u = upstream().await;
    let g = tls_gate(dir, &[&a, &b], u.addr).await;
    let (_, token) = add_token(&g.tokens, Grant::to(&["a"]));
    until_tokens(&g, 1.0).await;

    // SNI: each name gets its certificate; a wildcard matches one label; unknown names get the
    // first (the default).
    for (sni, want) in [("a.test", &a), ("b.test", &b), ("x.wild.test", &b)] {
        let conn = tls_connect(&pki, g.addr, sni, &[b"http/1.1"]).await;
        assert_eq!(presented(&conn), want.der, "SNI {sni}");
    }
    // A name no certificate holds gets the first one (checked by a client that does not verify).
    assert_eq!(presented_unverified(g.addr, "other.test").await, a.der);

    // ALPN h2: an HTTP/2 client through TLS, to a protected route.
    let conn = tls_connect(&pki, g.addr, "a.test", &[b"h2", b"http/1.1"]).await;
    assert_eq!(conn.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let mut h2 = h2_over(conn).await;
    assert_eq!(get_over(&mut h2, "/", Some(&token)).await.0, StatusCode::OK);
    assert_eq!(
        get_over(&mut h2, "/", None).await.0,
        StatusCode::UNAUTHORIZED
    );

    // ALPN http/1.1.
    let conn = tls_connect(&pki, g.addr, "a.test", &[b"http/1.1"]).await;
    assert_eq!(conn.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let mut h1 = h1_over(conn).await;
    assert_eq!(get_over(&mut h1, "/", Some(&token)).await.0, StatusCode::OK);
    let seen = u.seen.lock().unwrap().last().cloned().unwrap();
    assert_eq!(seen.headers["x-forwarded-proto"], "https");

    // Only TLS 1.2 and 1.3: an OpenSSL client forced to TLS 1.1 is refused, 1.2 is accepted.
    let port = g.addr.port().to_string();
    let handshake = move |version: &'static str| {
        let port = port.clone();
        std::process::Command::new("openssl")
            .args([
                "s_client",
                "-connect",
                &format!("127.0.0.1:{port}"),
                "-servername",
                "a.test",
                version,
            ])
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap()
    };
    // Blocking commands off the runtime thread, which also serves the gateway.
    let old = tokio::task::spawn_blocking({
        let h = handshake.clone();
        move || h("-tls1_1")
    })
    .await
    .unwrap();
    assert!(!old.status.success(), "TLS 1.1 must be refused");
    let ok = tokio::task::spawn_blocking(move || handshake("-tls1_2"))
        .await
        .unwrap();
    assert!(
        String::from_utf8_lossy(&ok.stdout).contains("TLSv1.2"),
        "{}",
        String::from_utf8_lossy(&ok.stdout)
    );
}

#[tokio::test]
async fn changed_certificate_files_serve_new_handshakes_and_spare_open_connections() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let first = pki.leaf("a", &["a.test"]);
    // A second listener with its own certificate is the positive control: its watcher polls on
    // the same 1 s period, started with the first.
    let control = pki.leaf("control", &["control.test"]);
    let u = upstream().await;
    let g = tls_gate_listeners(dir, &[&[&first], &[&control]], u.addr).await;
    let control_addr = g.running.proxy_addrs[1];
    let (_, token) = add_token(&g.tokens, Grant::to(&["a"]));

    let open = tls_connect(&pki, g.addr, "a.test", &[b"http/1.1"]).await;
    assert_eq!(presented(&open), first.der);
    let mut open = h1_over(open).await;
    until_tokens(&g, 1.0).await;
    assert_eq!(
        get_over(&mut open, "/", Some(&token)).await.0,
        StatusCode::OK
    );

    // A mismatched pair (a key that is not the certificate's) is refused; the old one stays.
    // Instead of a bare sleep: after the break, the control's files change twice, and each new
    // control certificate is waited for. Two reloads on a watcher with the same period as the
    // subject's mean at least one full poll period passed after the break was written, so the
    // subject's watcher has read the broken pair (there is no TLS reload metric to wait on).
    let stranger = pki.leaf("stranger", &["a.test"]);
    std::fs::copy(&stranger.key, &first.key).unwrap();
    for _ in 0..2 {
        let next = pki.leaf("control", &["control.test"]);
        eventually(Duration::from_secs(5), || async {
            presented(&tls_connect(&pki, control_addr, "control.test", &[b"http/1.1"]).await)
                == next.der
        })
        .await;
    }
    let conn = tls_connect(&pki, g.addr, "a.test", &[b"http/1.1"]).await;
    assert_eq!(
        presented(&conn),
        first.der,
        "a broken pair must not replace the good one"
    );

    let second = pki.leaf("a", &["a.test"]);
    eventually(Duration::from_secs(5), || async {
        presented(&tls_connect(&pki, g.addr, "a.test", &[b"http/1.1"]).await) == second.der
    })
    .await;
    // The connection opened before the change still serves requests.
    assert_eq!(
        get_over(&mut open, "/", Some(&token)).await.0,
        StatusCode::OK
    );

    // A reload (SIGHUP) naming other files switches to them at once.
    let third = pki.leaf("c", &["a.test"]);
    let text = format!(
        "listeners:\n  - address: \"127.0.0.1:0\"\n    tls: {{ certificates: [ {{ cert: \"{}\", key: \"{}\" }} ] }}\nadmin: {{address: \"127.0.0.1:0\"}}\nlog: {{access: false}}\ndeployments:\n{}",
        third.cert.display(),
        third.key.display(),
        deployment("a", u.addr, "protected", "")
    );
    let config = Config::parse(&text, "test.yaml", g.dir.path()).unwrap();
    g.running.reloader.reload(config).unwrap();
    let conn = tls_connect(&pki, g.addr, "a.test", &[b"http/1.1"]).await;
    assert_eq!(presented(&conn), third.der);
}

#[tokio::test]
async fn missing_unreadable_or_mismatched_keys_fail_start_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let a = pki.leaf("a", &["a.test"]);
    let b = pki.leaf("b", &["b.test"]);
    let start = |cert: &Path, key: &Path| {
        let text = format!(
            "listeners:\n  - address: \"127.0.0.1:0\"\n    tls: {{ certificates: [ {{ cert: \"{}\", key: \"{}\" }} ] }}\nadmin: {{address: \"127.0.0.1:0\"}}\ndeployments:\n  - {{ name: a, upstream: \"http://127.0.0.1:1\", policy: public }}\n",
            cert.display(),
            key.display()
        );
        let config = Config::parse(&text, "test.yaml", dir.path()).unwrap();
        async move {
            match Running::start(config).await {
                Ok(_) => panic!("start must fail"),
                Err(e) => e.to_string(),
            }
        }
    };
    let missing = start(&a.cert, &dir.path().join("nope.key")).await;
    assert!(missing.contains("nope.key"), "{missing}");
    let mismatched = start(&a.cert, &b.key).await;
    assert!(
        mismatched.contains("a.crt") && mismatched.contains("b.key"),
        "{mismatched}"
    );
    let not_pem = start(&a.key, &a.key).await;
    assert!(
        not_pem.contains("a.key") && not_pem.contains("CERTIFICATE"),
        "{not_pem}"
    );
}

/// An https upstream (TLS with a certificate from the test CA) answering "tls ok".
async fn https_upstream(pki: &Pki, alpn: &[&[u8]]) -> SocketAddr {
    let leaf = pki.leaf("upstream", &["localhost"]);
    let certs = vec![CertificateDer::from(leaf.der.clone())];
    let key = rustls::pki_types::PrivateKeyDer::from_pem_file(&leaf.key).unwrap();
    let mut config = rustls::ServerConfig::builder_with_provider(bentogate::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let service =
                    hyper::service::service_fn(|req: Request<hyper::body::Incoming>| async move {
                        let body = format!("tls ok {:?}", req.version());
                        Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(
                            Bytes::from(body),
                        )))
                    });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn https_upstreams_are_verified_against_the_configured_ca_over_http1_and_h2() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let h1 = https_upstream(&pki, &[b"http/1.1"]).await;
    let h2 = https_upstream(&pki, &[b"h2"]).await;
    let _ = rustls::pki_types::PrivateKeyDer::from_pem_file(pki.dir.join("upstream.key"));
    let routes = format!(
        "  - {{ name: one, path_prefix: /one, upstream: \"https://localhost:{}\", policy: public }}\n  - {{ name: two, path_prefix: /two, upstream: \"https://localhost:{}\", upstream_protocol: h2, policy: public }}\n",
        h1.port(),
        h2.port()
    );
    let trusted = gate(&format!(
        "forwarding: {{ upstream_ca: \"{}\" }}\ndeployments:\n{routes}",
        pki.ca_file().display()
    ))
    .await;
    let a = send(&client(), trusted.addr, "/one", &[]).await;
    assert_eq!(
        (a.status, a.body.as_str()),
        (StatusCode::OK, "tls ok HTTP/1.1")
    );
    let a = send(&client(), trusted.addr, "/two", &[]).await;
    assert_eq!(
        (a.status, a.body.as_str()),
        (StatusCode::OK, "tls ok HTTP/2.0")
    );

    // The platform's roots do not know the test CA: the upstream is refused (502).
    let untrusted = gate(&format!("deployments:\n{routes}")).await;
    assert_eq!(
        send(&client(), untrusted.addr, "/one", &[]).await.status,
        StatusCode::BAD_GATEWAY
    );
}

/// A WebSocket echo server (the upstream).
async fn websocket_upstream() -> SocketAddr {
    use futures_util::{SinkExt, StreamExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await else {
                    return;
                };
                while let Some(Ok(msg)) = ws.next().await {
                    if msg.is_close() {
                        break;
                    }
                    if ws.send(msg).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    addr
}

#[tokio::test]
async fn websockets_are_authorized_then_tunnelled_both_ways() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::Message;
    let ws = websocket_upstream().await;
    let g = gate(&format!(
        "deployments:\n{}",
        deployment("a", ws, "protected", "")
    ))
    .await;
    let (_, token) = add_token(&g.tokens, Grant::to(&["a"]));
    until_tokens(&g, 1.0).await;
    let request = |token: Option<&str>| {
        let mut r = format!("ws://{}/chat", g.addr)
            .into_client_request()
            .unwrap();
        if let Some(t) = token {
            r.headers_mut()
                .insert("authorization", format!("Bearer {t}").parse().unwrap());
        }
        r
    };

    // Without a token: the upgrade is refused with 401 before reaching the upstream.
    let tcp = TcpStream::connect(g.addr).await.unwrap();
    match tokio_tungstenite::client_async(request(None), tcp).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(res)) => {
            assert_eq!(res.status(), StatusCode::UNAUTHORIZED)
        }
        other => panic!("expected a 401, got {:?}", other.map(|(_, r)| r.status())),
    }

    let tcp = TcpStream::connect(g.addr).await.unwrap();
    let (mut socket, res) = tokio_tungstenite::client_async(request(Some(&token)), tcp)
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::SWITCHING_PROTOCOLS);
    for text in ["hello", "second message", &"x".repeat(100_000)] {
        socket.send(Message::text(text)).await.unwrap();
        let echoed = socket.next().await.unwrap().unwrap();
        assert_eq!(echoed.into_text().unwrap(), text);
    }
    socket
        .send(Message::binary(vec![0u8, 1, 2, 255]))
        .await
        .unwrap();
    assert_eq!(
        socket.next().await.unwrap().unwrap().into_data().to_vec(),
        vec![0u8, 1, 2, 255]
    );
    socket.close(None).await.unwrap();
    // The close travels through and the tunnel ends: the stream finishes.
    let end = tokio::time::timeout(Duration::from_secs(3), async {
        while let Some(Ok(m)) = socket.next().await {
            if m.is_close() {
                continue;
            }
        }
    })
    .await;
    assert!(end.is_ok(), "the tunnel did not close");
}

/// Reads a streamed body and returns when the first chunk arrived and when the whole ended.
async fn stream_timing(
    res: http::Response<hyper::body::Incoming>,
    release: &tokio::sync::Notify,
) -> (Duration, Duration, String) {
    let started = Instant::now();
    let mut body = res.into_body();
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    let first_at = started.elapsed();
    // The upstream holds its last event until released: the first arrived without it.
    tokio::time::sleep(Duration::from_millis(300)).await;
    release.notify_one();
    let mut all = String::from_utf8_lossy(&first).into_owned();
    while let Some(f) = body.frame().await {
        if let Ok(d) = f.unwrap().into_data() {
            all.push_str(&String::from_utf8_lossy(&d));
        }
    }
    (first_at, started.elapsed(), all)
}

#[tokio::test]
async fn streams_flow_unbuffered_over_http1_h2c_and_tls_h2() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let a = pki.leaf("a", &["a.test"]);
    let u = upstream().await;
    let g = tls_gate(dir, &[&a], u.addr).await;
    let (_, token) = add_token(&g.tokens, Grant::to(&["a"]));
    let plain = gate(&format!(
        "deployments:\n{}",
        deployment("a", u.addr, "protected", "")
    ))
    .await;
    add_record(
        &plain.tokens,
        "same-token",
        bentogate::token::Digest::of(token.as_bytes()),
        Grant::to(&["a"]),
    );
    until_tokens(&g, 1.0).await;
    until_tokens(&plain, 1.0).await;
    let auth = format!("Bearer {token}");

    // HTTP/1.1 and h2c on the plain listener, h2 over TLS on the other.
    for (name, c) in [("http/1.1", client()), ("h2c", h2c_client())] {
        let req = Request::get(format!("http://{}/stream", plain.addr))
            .header("authorization", &auth)
            .body(Full::new(Bytes::new()))
            .unwrap();
        let res = c.request(req).await.unwrap();
        assert_eq!(res.status(), StatusCode::OK, "{name}");
        let (first, total, body) = stream_timing(res, &u.release).await;
        assert!(
            first + Duration::from_millis(250) < total,
            "{name}: first chunk at {first:?}, end at {total:?}"
        );
        assert!(body == "first\nlast\n", "{name}: {body}");
    }
    let conn = tls_connect(&pki, g.addr, "a.test", &[b"h2"]).await;
    let mut h2 = h2_over(conn).await;
    let req = Request::get("https://a.test/stream")
        .header("authorization", &auth)
        .body(Full::new(Bytes::new()))
        .unwrap();
    let res = h2.send_request(req).await.unwrap();
    let (first, total, body) = stream_timing(res, &u.release).await;
    assert!(
        first + Duration::from_millis(250) < total,
        "h2/TLS: first chunk at {first:?}, end at {total:?}"
    );
    assert!(body == "first\nlast\n");
}

/// Runs `clients` loops of requests against `addr` until `stop`; returns (sent, failed).
fn steady_load(
    addr: SocketAddr,
    token: String,
    clients: usize,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> tokio::task::JoinHandle<(usize, Vec<String>)> {
    tokio::spawn(async move {
        let sent = Arc::new(AtomicUsize::new(0));
        let loops: Vec<_> = (0..clients)
            .map(|i| {
                let (stop, sent, token) = (Arc::clone(&stop), Arc::clone(&sent), token.clone());
                tokio::spawn(async move {
                    let c = if i % 2 == 0 { client() } else { h2c_client() };
                    let mut failures = Vec::new();
                    let auth = format!("Bearer {token}");
                    while !stop.load(Ordering::Acquire) {
                        let a = send(&c, addr, "/", &[("authorization", &auth)]).await;
                        sent.fetch_add(1, Ordering::Relaxed);
                        if a.status != StatusCode::OK {
                            failures.push(format!("{} {}", a.status, a.body));
                        }
                    }
                    failures
                })
            })
            .collect();
        let mut failures = Vec::new();
        for l in loops {
            failures.extend(l.await.unwrap());
        }
        (sent.load(Ordering::Relaxed), failures)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_and_token_changes_under_load_fail_no_request() {
    let u = upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let base = format!("deployments:\n{}", deployment("a", u.addr, "protected", ""));
    let g = gate_in(dir, &base).await;
    let (_, token) = add_token(&g.tokens, Grant::to(&["a"]));
    until_status(g.addr, "/", Some(&token), StatusCode::OK).await;

    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = steady_load(g.addr, token.clone(), 8, Arc::clone(&stop));
    let parse = |body: &str| {
        let text = format!("listeners: [{{address: \"127.0.0.1:0\"}}]\nadmin: {{address: \"127.0.0.1:0\"}}\nlog: {{access: false}}\n{body}");
        Config::parse(&text, "test.yaml", g.dir.path()).unwrap()
    };
    // Reload with a new route, several times, while tokens change under the load.
    let with_b = format!(
        "{base}{}",
        deployment("b", u.addr, "public", "    path_prefix: /b\n")
    );
    for round in 0..4 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        g.running
            .reloader
            .reload(parse(if round % 2 == 0 { &with_b } else { &base }))
            .unwrap();
        add_token(&g.tokens, Grant::to(&["a"]));
    }
    g.running.reloader.reload(parse(&with_b)).unwrap();
    // A bad new config (an unreadable CA file) is refused; the old one keeps serving.
    let bad = parse(&format!(
        "forwarding: {{ upstream_ca: /nonexistent/ca.pem }}\n{base}"
    ));
    let refused = g.running.reloader.reload(bad).unwrap_err().to_string();
    assert!(refused.contains("/nonexistent/ca.pem"), "{refused}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Release);
    let (sent, failures) = load.await.unwrap();
    assert!(sent > 50, "too little load to mean anything: {sent}");
    assert!(
        failures.is_empty(),
        "{} of {sent} failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    // The last good config is live: route b exists.
    assert_eq!(status(g.addr, "/b", None).await, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_under_load_finishes_every_in_flight_request_on_http1_and_h2() {
    let u = upstream().await;
    let g = gate(&format!(
        "deployments:\n{}",
        deployment("a", u.addr, "public", "")
    ))
    .await;
    let addr = g.addr;
    // 6 requests on HTTP/1.1 and 6 on h2c, all held by the upstream mid-body.
    let before = u.seen.lock().unwrap().len();
    let inflight: Vec<_> = (0..12)
        .map(|i| {
            tokio::spawn(async move {
                let c = if i % 2 == 0 { client() } else { h2c_client() };
                let req = Request::get(format!("http://{addr}/stream"))
                    .body(Full::new(Bytes::new()))
                    .unwrap();
                let res = c.request(req).await.unwrap();
                let status = res.status();
                let body = res.into_body().collect().await.unwrap().to_bytes();
                (status, String::from_utf8_lossy(&body).into_owned())
            })
        })
        .collect();
    eventually(Duration::from_secs(5), || async {
        u.seen.lock().unwrap().len() >= before + 12
    })
    .await;
    let stopping = tokio::spawn(g.running.stop());
    // New connections are refused once the listener closes.
    eventually(Duration::from_secs(3), || async {
        TcpStream::connect(addr).await.is_err()
    })
    .await;
    for _ in 0..12 {
        u.release.notify_one();
    }
    let mut done = 0;
    for f in inflight {
        let (status, body) = f.await.unwrap();
        assert_eq!(status, StatusCode::OK);
        assert!(body == "first\nlast\n", "{body}");
        done += 1;
    }
    assert_eq!(done, 12);
    tokio::time::timeout(Duration::from_secs(10), stopping)
        .await
        .expect("stop returns once drained")
        .unwrap();
}

#[tokio::test]
async fn idle_keepalive_connections_are_closed_and_h2_streams_are_capped() {
    let u = upstream().await;
    let g = gate(&format!(
        "limits: {{ keepalive_timeout: 300ms, header_read_timeout: 10s, max_concurrent_streams: 2 }}\ndeployments:\n{}",
        deployment("a", u.addr, "public", "")
    ))
    .await;
    // One request, then silence: the connection is closed after the keep-alive timeout.
    let mut tcp = TcpStream::connect(g.addr).await.unwrap();
    tcp.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tcp.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    let started = Instant::now();
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "idle connection still open after 5 s");
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "closed too early: {:?}",
        started.elapsed()
    );

    // HTTP/2: at most 2 streams at once on one connection; the third waits for a free one.
    let mut h2 = h2_over(TcpStream::connect(g.addr).await.unwrap()).await;
    // One exchange first, so the client has the server's SETTINGS before it opens streams.
    let warm = Request::get("http://x/")
        .body(Full::new(Bytes::new()))
        .unwrap();
    assert_eq!(
        h2.send_request(warm).await.unwrap().status(),
        StatusCode::OK
    );
    let before = u.seen.lock().unwrap().len();
    let streams: Vec<_> = (0..3)
        .map(|_| {
            let req = Request::get("http://x/stream")
                .body(Full::new(Bytes::new()))
                .unwrap();
            let f = h2.send_request(req);
            tokio::spawn(async move {
                let res = f.await.unwrap();
                res.into_body().collect().await.unwrap().to_bytes().len()
            })
        })
        .collect();
    let streams_seen = || {
        u.seen.lock().unwrap()[before..]
            .iter()
            .filter(|s| s.path_and_query == "/stream")
            .count()
    };
    eventually(Duration::from_secs(3), || async { streams_seen() == 2 }).await;
    // Positive control instead of a bare sleep: a request on a second connection, sent after
    // the third stream, reaches the upstream and is answered; the third stream, held only by
    // its connection's limit, still has not.
    let mut other = h2_over(TcpStream::connect(g.addr).await.unwrap()).await;
    let control = Request::get("http://x/?control")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let answered = tokio::time::timeout(Duration::from_secs(3), other.send_request(control))
        .await
        .expect("a request on another connection is answered within 3 s")
        .unwrap();
    assert_eq!(answered.status(), StatusCode::OK);
    assert!(u.seen.lock().unwrap()[before..]
        .iter()
        .any(|s| s.path_and_query == "/?control"));
    assert_eq!(streams_seen(), 2, "a third stream got through");
    for _ in 0..3 {
        u.release.notify_one();
    }
    eventually(Duration::from_secs(3), || async { streams_seen() == 3 }).await;
    u.release.notify_one();
    for s in streams {
        assert!(s.await.unwrap() > 0);
    }
}

#[tokio::test]
async fn requests_per_upstream_are_bounded_and_wait_for_a_free_slot() {
    let u = upstream().await;
    let g = gate(&format!(
        "forwarding: {{ pool: {{ max_connections_per_upstream: 1 }}, timeouts: {{ response_headers: 500ms }} }}\ndeployments:\n{}",
        deployment("a", u.addr, "public", "")
    ))
    .await;
    // The first request holds the only slot while its body streams.
    let req = Request::get(format!("http://{}/stream", g.addr))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let res = client().request(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let seen = u.seen.lock().unwrap().len();
    // A second waits for the slot, then gives up with 504 at the response-headers deadline,
    // never reaching the upstream.
    let waited = send(&client(), g.addr, "/", &[]).await;
    assert_eq!(waited.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(u.seen.lock().unwrap().len(), seen);
    // The body ends, the slot is free, the next request passes.
    u.release.notify_one();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"first\nlast\n");
    assert_eq!(
        send(&client(), g.addr, "/", &[]).await.status,
        StatusCode::OK
    );
}
