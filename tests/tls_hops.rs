//! TLS on the hops around the data plane, with certificates made here (rcgen) and real clients:
//! the admin listener over https serves the real `bentoml` client and `bentogate token
//! --endpoint https://... --ca-file`, and both refuse a wrong CA and a wrong host name with a
//! clear error; `admin.tls.client_ca` demands a client certificate; a gateway introspects a
//! second bentogate over https, and its client token file rotates (a Kubernetes Secret's symlink
//! swap, the old token revoked right after) under load with zero failed requests.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bentogate::config::{CaSource, CertificatePair, Config};
use bentogate::server::Running;
use bentogate::tls::client::{self as tls_client, Verify};
use bentogate::token::Scope;
use common::pki::{Leaf, Pki};
use common::*;
use http::StatusCode;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A control plane whose admin listener serves TLS with `leaf` (and `client_ca`, if given).
async fn tls_control_plane(
    dir: &Path,
    leaf: &Leaf,
    client_ca: Option<&Path>,
    u: SocketAddr,
) -> (Running, PathBuf) {
    let client_ca = client_ca
        .map(|p| format!(", client_ca: \"{}\"", p.display()))
        .unwrap_or_default();
    let text = format!(
        "listeners: [{{address: \"127.0.0.1:0\"}}]\nadmin: {{address: \"127.0.0.1:0\", tls: {{certificates: [{{cert: \"{}\", key: \"{}\"}}]{client_ca}}}}}\nlog: {{access: false}}\nthrottle: {{failures_per_minute: 0}}\ndeployments:\n{}",
        leaf.cert.display(),
        leaf.key.display(),
        deployment("a", u, "protected", "")
    );
    let config = Config::parse(&text, "cp.yaml", dir).unwrap();
    let tokens = config.tokens.file.clone();
    (Running::start(config).await.unwrap(), tokens)
}

fn admin_grant() -> Grant {
    Grant {
        scopes: vec![
            Scope::Api,
            Scope::ReadOrganization,
            Scope::WriteOrganization,
            Scope::ReadCluster,
        ],
        all: true,
        ..Grant::default()
    }
}

/// Runs the venv's `bentoml` with `args`, trusting `ca`; (success, stdout + stderr).
async fn bentoml(home: &Path, ca: &Path, args: &[&str]) -> (bool, String) {
    let exe = bentoml_python().with_file_name("bentoml");
    let mut cmd = Command::new(exe);
    cmd.args(args)
        .env("BENTOML_HOME", home)
        .env("BENTOML_DO_NOT_TRACK", "True")
        // With the key in the environment the client ignores the context login wrote.
        .env_remove("BENTO_CLOUD_API_KEY")
        .env("REQUESTS_CA_BUNDLE", ca)
        .env("SSL_CERT_FILE", ca)
        .env_remove("BENTO_CLOUD_API_ENDPOINT");
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// Runs `bentogate` (the real binary) with `args` as `key`; (exit code, stdout, stderr).
async fn bentogate(key: &str, args: &[&str]) -> (i32, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_bentogate"));
    cmd.args(args)
        .env("BENTO_CLOUD_API_KEY", key)
        .env_remove("BENTOGATE_CONFIG")
        .env_remove("BENTO_CLOUD_API_ENDPOINT");
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_admin_serves_bentoml_and_the_cli_and_refuses_a_wrong_ca_or_name() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "admin");
    let other = Pki::new(dir.path(), "other");
    let leaf = pki.leaf("admin", &["localhost"]);
    let u = upstream().await;
    let (cp, tokens) = tls_control_plane(dir.path(), &leaf, None, u.addr).await;
    let (_, key) = add_token(&tokens, admin_grant());
    let port = cp.admin_addr.port();
    let endpoint = format!("https://localhost:{port}");
    let home = tempfile::tempdir().unwrap();

    // The real bentoml client, trusting the test CA: login, then list.
    let (ok, out) = bentoml(
        home.path(),
        &pki.ca_file(),
        &[
            "cloud",
            "login",
            "--api-token",
            &key,
            "--endpoint",
            &endpoint,
        ],
    )
    .await;
    assert!(ok && out.contains("Logged in as"), "login: {out}");
    let (ok, out) = bentoml(
        home.path(),
        &pki.ca_file(),
        &["api-token", "list", "-o", "json"],
    )
    .await;
    assert!(ok && out.contains("test-"), "list: {out}");
    assert!(!out.contains(&key), "the list showed a token value: {out}");

    // A CA that did not sign the certificate, and a name the certificate does not hold.
    let fresh = tempfile::tempdir().unwrap();
    let (ok, out) = bentoml(
        fresh.path(),
        &other.ca_file(),
        &[
            "cloud",
            "login",
            "--api-token",
            &key,
            "--endpoint",
            &endpoint,
        ],
    )
    .await;
    assert!(
        !ok && out.to_lowercase().contains("certificate verify failed"),
        "wrong CA: {out}"
    );
    let by_ip = format!("https://127.0.0.1:{port}");
    let (ok, out) = bentoml(
        fresh.path(),
        &pki.ca_file(),
        &["cloud", "login", "--api-token", &key, "--endpoint", &by_ip],
    )
    .await;
    assert!(
        !ok && out.contains("certificate verify failed") && out.contains("mismatch"),
        "wrong name: {out}"
    );

    // bentogate's own CLI: --ca-file, the same two refusals, and plain http refused.
    let ca = pki.ca_file().display().to_string();
    let (code, stdout, stderr) = bentogate(
        &key,
        &[
            "token",
            "list",
            "--endpoint",
            &endpoint,
            "--ca-file",
            &ca,
            "-o",
            "json",
        ],
    )
    .await;
    assert_eq!(code, 0, "{stderr}");
    let listed: Value = serde_json::from_str(&stdout).unwrap();
    assert!(listed.as_array().is_some_and(|a| !a.is_empty()), "{stdout}");
    let wrong_ca = other.ca_file().display().to_string();
    let (code, _, stderr) = bentogate(
        &key,
        &[
            "token",
            "list",
            "--endpoint",
            &endpoint,
            "--ca-file",
            &wrong_ca,
        ],
    )
    .await;
    assert!(
        code == 1 && stderr.contains("UnknownIssuer") && stderr.contains("--ca-file"),
        "{stderr}"
    );
    let (code, _, stderr) = bentogate(
        &key,
        &["token", "list", "--endpoint", &by_ip, "--ca-file", &ca],
    )
    .await;
    assert!(
        code == 1 && stderr.contains("not valid for name") && stderr.contains("--ca-file"),
        "{stderr}"
    );
    assert!(!stderr.contains(&key), "{stderr}");
    let (code, _, _) = bentogate(
        &key,
        &[
            "token",
            "list",
            "--endpoint",
            &format!("http://localhost:{port}"),
        ],
    )
    .await;
    assert_eq!(code, 1, "plain http to the TLS admin listener must fail");
    cp.stop().await;
}

/// GET /healthz on `addr` over TLS as `identity`; the status line, or the error.
async fn healthz_over_tls(
    addr: SocketAddr,
    ca: &Path,
    identity: Option<&CertificatePair>,
) -> Result<String, String> {
    get_over_tls(addr, ca, identity, "/healthz")
        .await
        .map(|text| text.lines().next().unwrap_or_default().to_owned())
}

/// GET `path` on `addr` over TLS as `identity`; the whole answer, or the error.
async fn get_over_tls(
    addr: SocketAddr,
    ca: &Path,
    identity: Option<&CertificatePair>,
    path: &str,
) -> Result<String, String> {
    let config = tls_client::config(
        Verify::Full(&CaSource::File(ca.to_owned())),
        identity,
        &[b"http/1.1"],
    )
    .unwrap();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = connector
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    tls.write_all(
        format!("GET {path} HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .map_err(|e| e.to_string())?;
    let mut got = Vec::new();
    tls.read_to_end(&mut got).await.map_err(|e| e.to_string())?;
    Ok(String::from_utf8_lossy(&got).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_expiring_within_14_days_is_a_check_warning_and_a_metric() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "admin");
    let leaf = pki.leaf_for("admin", &["localhost"], Some(5));
    let u = upstream().await;
    let (cp, _) = tls_control_plane(dir.path(), &leaf, None, u.addr).await;
    let metrics = get_over_tls(cp.admin_addr, &pki.ca_file(), None, "/metrics")
        .await
        .unwrap();
    let series = format!(
        "bentogate_tls_certificate_expiry_seconds{{cert=\"{}\",listener=\"admin\"}}",
        leaf.cert.display()
    );
    let at = metric(&metrics, &series);
    let left = at - bentogate::clock::now() as f64;
    assert!(
        (4.0 * 86400.0..=5.0 * 86400.0 + 60.0).contains(&left),
        "{series} = {at} ({left} s from now)"
    );
    cp.stop().await;

    // `check` names each hop's TLS state and warns about the certificate.
    let config = dir.path().join("check.yaml");
    std::fs::write(
        &config,
        format!(
            "admin: {{address: \"127.0.0.1:0\", tls: {{certificates: [{{cert: \"{}\", key: \"{}\"}}]}}}}\ntokens:\n  source: postgres\n  postgres: {{url: \"postgres://bg:pw@db/x?sslmode=verify-full&sslrootcert={}\"}}\ndeployments:\n{}",
            leaf.cert.display(),
            leaf.key.display(),
            pki.ca_file().display(),
            deployment("a", u.addr, "protected", "")
        ),
    )
    .unwrap();
    let (code, stdout, stderr) =
        bentogate("", &["check", "--config", config.to_str().unwrap()]).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("admin 127.0.0.1:0: TLS")
            && stdout.contains("sslmode=verify-full")
            && stdout.contains("proxy ")
            && stdout.contains(&format!("warning: {} expires in ", leaf.cert.display())),
        "{stdout}"
    );
    assert!(!stdout.contains(":pw@"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_client_ca_demands_a_client_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "admin");
    let clients = Pki::new(dir.path(), "clients");
    let leaf = pki.leaf("admin", &["localhost"]);
    let good = clients.leaf("edge", &["edge"]);
    let stranger = pki.leaf("stranger", &["stranger"]);
    let u = upstream().await;
    let (cp, _) = tls_control_plane(dir.path(), &leaf, Some(&clients.ca_file()), u.addr).await;
    let pair = |l: &Leaf| CertificatePair {
        cert: l.cert.clone(),
        key: l.key.clone(),
    };
    let ok = healthz_over_tls(cp.admin_addr, &pki.ca_file(), Some(&pair(&good)))
        .await
        .unwrap();
    assert!(ok.contains("200"), "{ok}");
    for who in [None, Some(pair(&stranger))] {
        let refused = healthz_over_tls(cp.admin_addr, &pki.ca_file(), who.as_ref()).await;
        assert!(
            refused.as_ref().map_or(true, |line| !line.contains("200")),
            "served without a trusted client certificate: {refused:?}"
        );
    }
    cp.stop().await;
}

/// A Kubernetes Secret volume: `token -> ..data/token`, `..data -> ..<version>`.
fn mount_secret(dir: &Path, version: &str, token: &str) {
    let versioned = dir.join(format!("..{version}"));
    std::fs::create_dir_all(&versioned).unwrap();
    std::fs::write(versioned.join("token"), format!("{token}\n")).unwrap();
    let tmp = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(format!("..{version}"), &tmp).unwrap();
    // The swap is one rename, as the kubelet does it.
    std::fs::rename(&tmp, dir.join("..data")).unwrap();
    let link = dir.join("token");
    if std::fs::symlink_metadata(&link).is_err() {
        std::os::unix::fs::symlink("..data/token", &link).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn introspection_over_https_survives_a_token_rotation_under_load() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "cp");
    let leaf = pki.leaf("cp", &["localhost"]);
    let u = upstream().await;
    let (cp, tokens) = tls_control_plane(dir.path(), &leaf, None, u.addr).await;
    let (_, admin) = add_token(&tokens, admin_grant());
    let reader = Grant {
        scopes: vec![Scope::ReadCluster],
        ..Grant::default()
    };
    let (old_uid, old) = add_token(&tokens, reader.clone());
    let (_, new) = add_token(&tokens, reader);
    let (_, caller) = add_token(&tokens, Grant::to(&["a"]));

    let secret = dir.path().join("secret");
    std::fs::create_dir_all(&secret).unwrap();
    mount_secret(&secret, "v1", &old);
    let edge_dir = tempfile::tempdir().unwrap();
    let text = format!(
        "listeners: [{{address: \"127.0.0.1:0\"}}]\nadmin: {{address: \"127.0.0.1:0\"}}\nlog: {{access: false}}\nthrottle: {{failures_per_minute: 0}}\ntokens:\n  source: introspect\n  cache: {{ttl: 20ms, negative_ttl: 20ms}}\n  introspect: {{url: \"https://localhost:{}/v1/introspect\", ca_file: \"{}\", token_file: \"{}\"}}\ndeployments:\n{}",
        cp.admin_addr.port(),
        pki.ca_file().display(),
        secret.join("token").display(),
        deployment("a", u.addr, "protected", "")
    );
    let edge = Running::start(Config::parse(&text, "edge.yaml", edge_dir.path()).unwrap())
        .await
        .unwrap();
    let gate = edge.proxy_addrs[0];
    assert_eq!(status(gate, "/a/x", Some(&caller)).await, StatusCode::OK);

    // Load: four callers in a loop until told to stop; every answer but 200 is a failure.
    let stop = Arc::new(AtomicBool::new(false));
    let (done, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut load = Vec::new();
    for _ in 0..4 {
        let (stop, done, failed, caller) = (
            Arc::clone(&stop),
            Arc::clone(&done),
            Arc::clone(&failed),
            caller.clone(),
        );
        load.push(tokio::spawn(async move {
            let c = client();
            let auth = format!("Bearer {caller}");
            while !stop.load(Ordering::Relaxed) {
                let s = send(&c, gate, "/a/x", &[("authorization", &auth)])
                    .await
                    .status;
                if s != StatusCode::OK {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    eventually(Duration::from_secs(10), || {
        let n = done.load(Ordering::Relaxed);
        async move { n >= 100 }
    })
    .await;

    // Rotate: the Secret now holds the new token; the old one is revoked at once, before the
    // watcher's next look (the refused call re-reads the file and retries).
    mount_secret(&secret, "v2", &new);
    let ca = pki.ca_file().display().to_string();
    let (code, _, stderr) = bentogate(
        &admin,
        &[
            "token",
            "delete",
            &old_uid,
            "--endpoint",
            &format!("https://localhost:{}", cp.admin_addr.port()),
            "--ca-file",
            &ca,
        ],
    )
    .await;
    assert_eq!(code, 0, "{stderr}");
    let revoked_at = done.load(Ordering::Relaxed);
    let since = Instant::now();
    eventually(Duration::from_secs(20), || {
        let n = done.load(Ordering::Relaxed);
        let t = since.elapsed();
        async move { n >= revoked_at + 300 && t >= Duration::from_millis(1500) }
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    for l in load {
        l.await.unwrap();
    }
    let (total, failures) = (done.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    eprintln!(
        "introspection over https, token rotated under load: {total} requests, {failures} failed"
    );
    assert_eq!(failures, 0, "{failures} of {total} requests failed");
    // The edge now holds the new token: its probe passes and it is ready.
    assert_eq!(
        send(&client(), edge.admin_addr, "/readyz", &[])
            .await
            .status,
        StatusCode::OK
    );
    edge.stop().await;
    cp.stop().await;
}
