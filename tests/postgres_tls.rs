//! The `postgres` source over TLS, against a throwaway PostgreSQL cluster this file starts
//! (`initdb` in a temp dir as the `postgres` user, `ssl = on` with certificates made here, a free
//! port, `hostssl`-only pg_hba with SCRAM passwords): `sslmode` keeps libpq's meaning
//! (`verify-full` works and refuses a wrong CA naming the setting, `require` works, `disable` is
//! refused by a TLS-only server with a hint), a client certificate is sent when asked, and
//! replicas still hear revocations within a second over TLS (LISTEN uses the same settings).
//!
//! Without `initdb` or the `postgres` user each test prints `SKIPPED <test>: ...` and returns,
//! unless `CI` is set: then it fails. The cluster is stopped (`pg_ctl stop`, then its process
//! group killed) when the test ends, pass or fail.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bentogate::config::Config;
use bentogate::metrics::Metrics;
use bentogate::server::Running;
use bentogate::store::postgres::PgSource;
use common::pki::Pki;
use common::*;
use http::StatusCode;
use serde_json::{json, Value};

const PASSWORD: &str = "tls-s3cret";

/// The PostgreSQL binaries: Debian's versioned folder, else whatever `initdb` is on PATH.
fn pg_bin() -> Option<PathBuf> {
    let debian = std::fs::read_dir("/usr/lib/postgresql").ok().and_then(|d| {
        d.flatten()
            .map(|e| e.path().join("bin"))
            .filter(|b| b.join("initdb").is_file())
            .max()
    });
    debian.or_else(|| {
        let out = Command::new("sh")
            .args(["-c", "command -v initdb"])
            .output()
            .ok()?;
        let p = PathBuf::from(String::from_utf8(out.stdout).ok()?.trim());
        p.parent()
            .map(Path::to_owned)
            .filter(|_| out.status.success())
    })
}

/// A PostgreSQL cluster of its own: TLS on, TCP only through `hostssl`, stopped on drop.
struct Cluster {
    bin: PathBuf,
    data: PathBuf,
    port: u16,
    /// The CA that signed the server's certificate (`localhost`).
    pki: Pki,
    /// A CA that signed nothing the server shows.
    other: Pki,
    /// The postmaster (through runuser), in a process group of its own.
    server: Option<ProcessGroup>,
    dir: tempfile::TempDir,
}

fn skip(test: &str, why: &str) -> Option<Cluster> {
    if std::env::var_os("CI").is_some() {
        panic!("{test}: cannot start a PostgreSQL cluster ({why}); in CI these tests must run: install PostgreSQL (initdb) and run as root");
    }
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED {test}: cannot start a PostgreSQL cluster ({why}); install PostgreSQL's server binaries and run as root (with CI set, this fails instead)"
    );
    None
}

fn as_postgres(bin: &Path, tool: &str) -> Command {
    let mut c = Command::new("runuser");
    c.args(["-u", "postgres", "--"]).arg(bin.join(tool));
    c
}

fn chown_postgres(path: &Path) {
    let out = Command::new("chown")
        .args(["-R", "postgres:postgres"])
        .arg(path)
        .output()
        .unwrap();
    assert!(out.status.success(), "chown: {out:?}");
}

impl Cluster {
    async fn start(test: &str) -> Option<Cluster> {
        let Some(bin) = pg_bin() else {
            return skip(test, "no initdb found");
        };
        let has_user = Command::new("id")
            .arg("postgres")
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !has_user {
            return skip(test, "no `postgres` user");
        }
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::new(dir.path(), "server");
        let other = Pki::new(dir.path(), "other");
        let server = pki.leaf("server", &["localhost"]);
        pki.leaf("client", &["bentogate"]);
        let data = dir.path().join("data");
        std::fs::write(dir.path().join("pw"), PASSWORD).unwrap();
        chown_postgres(dir.path());
        std::fs::set_permissions(&server.key, std::fs::Permissions::from_mode(0o600)).unwrap();
        let init = as_postgres(&bin, "initdb")
            .arg("-D")
            .arg(&data)
            .args([
                "-U",
                "postgres",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "--no-sync",
                "--pwfile",
            ])
            .arg(dir.path().join("pw"))
            .output()
            .unwrap();
        if !init.status.success() {
            return skip(
                test,
                &format!("initdb failed: {}", String::from_utf8_lossy(&init.stderr)),
            );
        }
        let port = free_port();
        let d = dir.path().display();
        std::fs::write(
            data.join("postgresql.auto.conf"),
            format!(
                "port = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{d}'\nssl = on\nssl_cert_file = '{d}/server.crt'\nssl_key_file = '{d}/server.key'\nssl_ca_file = '{d}/server-ca.pem'\nfsync = off\nmax_connections = 40\n"
            ),
        )
        .unwrap();
        // TCP only with TLS; the `certdb` database also wants a client certificate.
        std::fs::write(
            data.join("pg_hba.conf"),
            "local all all trust\nhostssl certdb all 127.0.0.1/32 scram-sha-256 clientcert=verify-ca\nhostssl all all 127.0.0.1/32 scram-sha-256\n",
        )
        .unwrap();
        chown_postgres(&data);
        let mut cmd = as_postgres(&bin, "postgres");
        cmd.arg("-D")
            .arg(&data)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut cluster = Cluster {
            bin,
            data,
            port,
            pki,
            other,
            server: Some(ProcessGroup::spawn(&mut cmd)),
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = as_postgres(&cluster.bin, "pg_isready")
                .args(["-q", "-h", "127.0.0.1", "-p", &port.to_string()])
                .status()
                .is_ok_and(|s| s.success());
            if ready {
                break;
            }
            if let Some(Ok(Some(status))) = cluster.server.as_mut().map(|s| s.0.try_wait()) {
                return skip(test, &format!("postgres exited: {status}"));
            }
            assert!(
                Instant::now() < deadline,
                "the cluster did not start within 30 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let created = as_postgres(&cluster.bin, "psql")
            .args([
                "-h",
                &cluster.dir.path().display().to_string(),
                "-p",
                &port.to_string(),
                "-U",
                "postgres",
                "-c",
                "CREATE DATABASE certdb",
            ])
            .output()
            .unwrap();
        assert!(created.status.success(), "{created:?}");
        Some(cluster)
    }

    /// A URL to database `db` as `localhost` (the certificate's name) at 127.0.0.1.
    fn url(&self, db: &str, tls: &str) -> String {
        format!(
            "postgres://postgres:{PASSWORD}@localhost:{}/{db}?hostaddr=127.0.0.1&{tls}",
            self.port
        )
    }

    fn ca(&self) -> String {
        self.pki.ca_file().display().to_string()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = as_postgres(&self.bin, "pg_ctl")
            .args(["stop", "-m", "immediate", "-w", "-t", "10", "-D"])
            .arg(&self.data)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        // Whatever is left of the group (runuser, a straggler) goes with it.
        drop(self.server.take());
    }
}

fn tokens_section(url: &str) -> String {
    format!(
        "tokens:\n  source: postgres\n  usage_flush: 200ms\n  postgres: {{ url: \"{url}\", pool_size: 2, timeout: 2s }}\n"
    )
}

fn pg_config(url: &str) -> bentogate::config::PostgresConfig {
    let text = format!(
        "listeners: [{{address: \"127.0.0.1:0\"}}]\n{}deployments:\n  - {{name: a, upstream: \"http://127.0.0.1:9\", policy: protected}}\n",
        tokens_section(url)
    );
    Config::parse(&text, "t.yaml", Path::new("."))
        .unwrap()
        .tokens
        .postgres
        .unwrap()
}

async fn connect(url: &str) -> Result<PgSource, String> {
    PgSource::connect(pg_config(url), Arc::new(Metrics::new().unwrap()))
        .await
        .map_err(|e| e.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sslmode_keeps_libpq_meaning_against_a_tls_only_server() {
    let Some(c) = Cluster::start("sslmode_keeps_libpq_meaning_against_a_tls_only_server").await
    else {
        return;
    };
    // verify-full: the chain leads to the CA and the certificate names `localhost`.
    let full = c.url(
        "postgres",
        &format!("sslmode=verify-full&sslrootcert={}", c.ca()),
    );
    connect(&full).await.unwrap();

    // verify-full with a CA that did not sign the server's certificate: refused, and the
    // message names the setting to fix (never the password).
    let wrong = c.url(
        "postgres",
        &format!(
            "sslmode=verify-full&sslrootcert={}",
            c.other.ca_file().display()
        ),
    );
    let e = connect(&wrong).await.err().unwrap();
    assert!(
        e.contains("sslmode=verify-full")
            && e.contains("sslrootcert=")
            && e.contains("other-ca.pem"),
        "{e}"
    );
    assert!(!e.contains(PASSWORD), "the password was printed: {e}");

    // verify-full against a name the certificate does not hold (127.0.0.1): refused;
    // verify-ca checks the chain only, so the same connection passes.
    let by_ip = |mode: &str| {
        format!(
            "postgres://postgres:{PASSWORD}@127.0.0.1:{}/postgres?sslmode={mode}&sslrootcert={}",
            c.port,
            c.ca()
        )
    };
    let e = connect(&by_ip("verify-full")).await.err().unwrap();
    assert!(e.contains("sslmode=verify-full"), "{e}");
    connect(&by_ip("verify-ca")).await.unwrap();

    // require: encrypted, the certificate unchecked (any CA passes); prefer (the default) too.
    connect(&c.url("postgres", "sslmode=require"))
        .await
        .unwrap();
    connect(&c.url("postgres", "application_name=t"))
        .await
        .unwrap();

    // disable: the server takes TCP connections only over TLS; the refusal says what to set.
    let e = connect(&c.url("postgres", "sslmode=disable"))
        .await
        .err()
        .unwrap();
    assert!(
        e.contains("no encryption") && e.contains("sslmode=require"),
        "{e}"
    );

    // A database that wants a client certificate: refused without one, served with one.
    let e = connect(&c.url(
        "certdb",
        &format!("sslmode=verify-full&sslrootcert={}", c.ca()),
    ))
    .await
    .err()
    .unwrap();
    assert!(e.contains("certificate"), "{e}");
    let dir = c.dir.path().display();
    connect(&c.url(
        "certdb",
        &format!(
            "sslmode=verify-full&sslrootcert={}&sslcert={dir}/client.crt&sslkey={dir}/client.key",
            c.ca()
        ),
    ))
    .await
    .unwrap();
}

/// A replica on `url`, routing deployment `a` to `upstream`.
async fn replica(url: &str, upstream: SocketAddr) -> Running {
    let text = format!(
        "listeners: [{{address: \"127.0.0.1:0\"}}]\nadmin: {{address: \"127.0.0.1:0\"}}\nlog: {{access: false}}\nthrottle: {{failures_per_minute: 0}}\n{}deployments:\n{}",
        tokens_section(url),
        deployment("a", upstream, "protected", "")
    );
    let dir = tempfile::tempdir().unwrap();
    let config = Config::parse(&text, "replica.yaml", dir.path()).unwrap();
    Running::start(config).await.unwrap()
}

/// `bentogate token create` (the real binary) on `url`: an organization admin token.
async fn admin_token(url: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bentogate.yaml");
    std::fs::write(
        &config,
        format!(
            "{}deployments:\n  - {{name: a, upstream: \"http://127.0.0.1:9\", policy: protected}}\n",
            tokens_section(url)
        ),
    )
    .unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_bentogate"));
    cmd.args([
        "token", "create", "root", "--org", "--scope", "api", "--scope",
    ])
    .args([
        "write_organization",
        "--all-deployments",
        "-o",
        "json",
        "--config",
    ])
    .arg(&config);
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .unwrap()
        .unwrap();
    assert!(
        out.status.success(),
        "token create failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v["token"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_hear_revocations_within_a_second_over_verified_tls() {
    let Some(c) =
        Cluster::start("replicas_hear_revocations_within_a_second_over_verified_tls").await
    else {
        return;
    };
    let url = c.url(
        "postgres",
        &format!("sslmode=verify-full&sslrootcert={}", c.ca()),
    );
    let u = upstream().await;
    let root = admin_token(&url).await;
    let a = replica(&url, u.addr).await;
    let b = replica(&url, u.addr).await;
    let (s, v) = api_call(
        a.admin_addr,
        "POST",
        "/api/v1/api_tokens",
        &root,
        json!({"name": "shared", "deployments": ["a"], "is_organization_token": true}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (uid, value) = (
        v["uid"].as_str().unwrap().to_owned(),
        v["token"].as_str().unwrap().to_owned(),
    );
    assert_eq!(
        status(b.proxy_addrs[0], "/a/x", Some(&value)).await,
        StatusCode::OK
    );
    let (s, v) = api_call(
        a.admin_addr,
        "DELETE",
        &format!("/api/v1/api_tokens/{uid}"),
        &root,
        Value::Null,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let start = Instant::now();
    loop {
        if status(b.proxy_addrs[0], "/a/x", Some(&value)).await == StatusCode::UNAUTHORIZED {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "B still passes the revoked token after 1 s"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let took = start.elapsed();
    eprintln!(
        "revocation over TLS (verify-full): DELETE committed on A -> first 401 on B after {took:?}"
    );
    a.stop().await;
    b.stop().await;
}
