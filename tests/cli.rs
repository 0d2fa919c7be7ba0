//! The real binary: token and member commands, `check`, `serve` logs and SIGTERM draining.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;
use http::StatusCode;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_bentogate"))
}

/// Runs the binary in `dir`, on `dir/bentogate.yaml` (through BENTOGATE_CONFIG) when
/// [`routes_a_and_b`] wrote one, else on the embedded configuration.
fn run(dir: &Path, args: &[&str]) -> Output {
    let mut cmd = bin();
    cmd.current_dir(dir)
        .args(args)
        .env_remove("BENTOGATE_CONFIG");
    if dir.join("bentogate.yaml").exists() {
        cmd.env("BENTOGATE_CONFIG", dir.join("bentogate.yaml"));
    }
    cmd.output().unwrap()
}

/// A configuration in `dir` that routes deployments `a` and `b`, which `token create
/// --deployment` is checked against; its token file is `dir/tokens.yaml`, as the embedded one's.
fn routes_a_and_b(dir: &Path) {
    std::fs::write(
        dir.join("bentogate.yaml"),
        "deployments:\n  - {name: a, path_prefix: /a, upstream: \"http://127.0.0.1:1\", policy: protected}\n  - {name: b, path_prefix: /b, upstream: \"http://127.0.0.1:1\", policy: protected}\n",
    )
    .unwrap();
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

const CONFIG: &str = "listeners: [{address: \"127.0.0.1:0\"}]\nadmin: {address: \"127.0.0.1:0\"}\n";

fn write_config(dir: &Path, upstream: SocketAddr, extra: &str) -> String {
    let text = format!(
        // No shutdown delay: nothing routes to these servers (tests/shutdown.rs tests the delay).
        "{CONFIG}shutdown: {{delay: 0s}}\n{extra}deployments:\n  - name: a\n    upstream: \"http://{upstream}\"\n    policy: protected\n    public_paths: [/readyz]\n"
    );
    std::fs::write(dir.join("bentogate.yaml"), text).unwrap();
    dir.join("bentogate.yaml").display().to_string()
}

#[test]
fn token_commands_print_the_value_once_and_never_again() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    routes_a_and_b(d);
    let created = run(
        d,
        &[
            "token",
            "create",
            "ci",
            "--deployment",
            "a",
            "--deployment",
            "b",
            "--description",
            "CI",
            "--expires",
            "30d",
            "-o",
            "json",
        ],
    );
    assert!(created.status.success(), "{}", stderr(&created));
    let v: serde_json::Value = serde_json::from_str(&stdout(&created)).unwrap();
    let value = v["token"].as_str().unwrap().to_owned();
    let uid = v["uid"].as_str().unwrap().to_owned();
    assert!(value.starts_with("bgt_") && value.len() == 40);
    assert_eq!(v["name"], "ci");
    assert_eq!(v["deployments"], serde_json::json!(["a", "b"]));
    let expires = bentogate::clock::parse_absolute(v["expired_at"].as_str().unwrap()).unwrap();
    assert!((expires - bentogate::clock::now() - 30 * 86400).abs() <= 5);

    for format in ["table", "json", "yaml"] {
        for args in [
            vec!["token", "list", "-o", format],
            vec!["token", "get", &uid, "-o", format],
        ] {
            let o = run(d, &args);
            assert!(o.status.success(), "{args:?}: {}", stderr(&o));
            assert!(stdout(&o).contains("ci"), "{args:?}");
            assert!(!stdout(&o).contains(&value), "{args:?} printed the value");
        }
    }
    assert!(!std::fs::read_to_string(d.join("tokens.yaml"))
        .unwrap()
        .contains(&value));
    let yaml: serde_yaml::Value =
        serde_yaml::from_str(&stdout(&run(d, &["token", "list", "-o", "yaml"]))).unwrap();
    assert_eq!(yaml[0]["uid"].as_str(), Some(uid.as_str()));

    let table = run(
        d,
        &[
            "token",
            "create",
            "ops",
            "--org",
            "--scope",
            "api",
            "--scope",
            "read_cluster",
            "--expires",
            "2999-12-31",
            "--monitoring",
        ],
    );
    assert!(
        stdout(&table).contains("shown this once"),
        "{}",
        stdout(&table)
    );
    let searched = stdout(&run(d, &["token", "list", "--search", "op", "-o", "json"]));
    let list: Vec<serde_json::Value> = serde_json::from_str(&searched).unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(
        list[0]["scopes"],
        serde_json::json!(["api", "read_cluster"])
    );
    assert_eq!(list[0]["expired_at"], "2999-12-31T00:00:00Z");
    assert_eq!(list[0]["monitoring"], true);
    assert_eq!(list[0]["kind"], "organization");
    let both = run(
        d,
        &[
            "token",
            "create",
            "x",
            "--org",
            "--user",
            "ann",
            "--all-deployments",
        ],
    );
    assert_eq!(
        both.status.code(),
        Some(2),
        "--org and --user exclude each other"
    );

    let deleted = run(d, &["token", "delete", &uid]);
    assert!(deleted.status.success());
    let again = run(d, &["token", "get", &uid]);
    assert_eq!(again.status.code(), Some(1));
    assert!(
        stderr(&again).contains("no token with uid"),
        "{}",
        stderr(&again)
    );
}

#[test]
fn token_create_refuses_bad_input_with_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    routes_a_and_b(d);
    let cases: [(&[&str], &str); 6] = [
        (&["token", "create", "x"], "at least one kind of access"),
        // A deployment no route names: refused, and the ones that exist are listed.
        (
            &[
                "token",
                "create",
                "x",
                "--deployment",
                "a",
                "--deployment",
                "nosuch",
            ],
            "no route in",
        ),
        (
            &[
                "token",
                "create",
                "x",
                "--deployment",
                "a",
                "--expires",
                "soon",
            ],
            "--expires",
        ),
        (
            &[
                "token",
                "create",
                "x",
                "--deployment",
                "a",
                "--expires",
                "2001-01-01",
            ],
            "in the past",
        ),
        (
            &[
                "token",
                "create",
                "x",
                "--deployment",
                "a",
                "--user",
                "ghost",
            ],
            "member add ghost",
        ),
        (
            &["token", "create", "x", "--scope", "root"],
            "invalid value",
        ),
    ];
    for (args, want) in cases {
        let o = run(d, args);
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        assert!(stderr(&o).contains(want), "{args:?}: {}", stderr(&o));
    }
    let o = run(d, &["token", "create", "x", "--deployment", "nosuch"]);
    assert!(
        stderr(&o).contains("`nosuch`; its deployments are: a, b"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn members_are_added_promoted_and_removed_with_their_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    assert!(
        run(d, &["member", "add", "ann", "--email", "ann@example.com"])
            .status
            .success()
    );
    assert_eq!(run(d, &["member", "add", "ann"]).status.code(), Some(2));
    assert!(run(
        d,
        &[
            "token",
            "create",
            "mine",
            "--user",
            "ann",
            "--all-deployments"
        ]
    )
    .status
    .success());
    assert!(run(d, &["member", "promote", "ann"]).status.success());
    let list: Vec<serde_json::Value> =
        serde_json::from_str(&stdout(&run(d, &["member", "list", "-o", "json"]))).unwrap();
    assert_eq!(list[0]["role"], "admin");
    assert_eq!(list[0]["email"], "ann@example.com");
    // The last active admin stays; a second one lets her go.
    assert_eq!(run(d, &["member", "remove", "ann"]).status.code(), Some(1));
    assert!(run(d, &["member", "add", "cy", "--admin"]).status.success());
    let removed = run(d, &["member", "remove", "ann"]);
    assert!(
        stdout(&removed).contains("deleted 1 personal tokens"),
        "{}",
        stdout(&removed)
    );
    assert_eq!(run(d, &["member", "remove", "ann"]).status.code(), Some(1));
    assert_eq!(
        stdout(&run(d, &["token", "list", "-o", "json"])).trim(),
        "[]"
    );
}

#[test]
fn the_last_active_admin_cannot_be_removed_or_deactivated_locally() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    routes_a_and_b(d);
    assert!(run(d, &["member", "add", "ann", "--admin"])
        .status
        .success());
    assert!(run(d, &["member", "add", "bob"]).status.success());
    for args in [
        &["member", "remove", "ann"][..],
        &["member", "deactivate", "ann"],
    ] {
        let o = run(d, args);
        assert_eq!(o.status.code(), Some(1), "{args:?}");
        assert!(
            stderr(&o).contains("last active admin") && stderr(&o).contains("promote"),
            "{args:?}: {}",
            stderr(&o)
        );
    }
    // Deactivating a member keeps her listed and says her personal tokens stopped working.
    assert!(run(
        d,
        &["token", "create", "b", "--user", "bob", "--deployment", "a"]
    )
    .status
    .success());
    let off = run(d, &["member", "deactivate", "bob"]);
    assert!(off.status.success(), "{}", stderr(&off));
    assert!(
        stdout(&off).contains("1 personal tokens no longer work"),
        "{}",
        stdout(&off)
    );
    // A name that breaks the rule is refused without being repeated.
    let bad = run(d, &["member", "add", "MARKER/../x"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(!stderr(&bad).contains("MARKER"), "{}", stderr(&bad));
    // With a second active admin, the first may go.
    assert!(run(d, &["member", "add", "cy", "--admin"]).status.success());
    assert!(run(d, &["member", "remove", "ann"]).status.success());
    let list: Vec<serde_json::Value> =
        serde_json::from_str(&stdout(&run(d, &["member", "list", "-o", "json"]))).unwrap();
    let names: Vec<&str> = list.iter().map(|m| m["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["bob", "cy"]);
    assert_eq!(list[0]["active"], false);
}

#[test]
fn concurrent_writers_never_lose_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_owned();
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let d = d.clone();
            std::thread::spawn(move || {
                for i in 0..5 {
                    let name = format!("w{w}-{i}");
                    let o = run(
                        &d,
                        &["token", "create", &name, "--all-deployments", "-o", "json"],
                    );
                    assert!(o.status.success(), "{}", stderr(&o));
                }
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    let list: Vec<serde_json::Value> =
        serde_json::from_str(&stdout(&run(&d, &["token", "list", "-o", "json"]))).unwrap();
    assert_eq!(list.len(), 40);
}

#[test]
fn check_names_file_line_and_key_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let bad = d.join("bad.yaml");
    std::fs::write(&bad, format!("{CONFIG}deployments:\n  - name: a\n    upstream: http://127.0.0.1:1\n    policy: protectd\n")).unwrap();
    let o = run(d, &["check", "--config", bad.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    let e = stderr(&o);
    assert!(
        e.contains("bad.yaml:6:") && e.contains("deployments[0].policy") && e.contains("protectd"),
        "{e}"
    );
    let o = run(d, &["serve", "--config", bad.to_str().unwrap()]);
    assert_eq!(
        o.status.code(),
        Some(2),
        "serve must refuse a bad config the same way"
    );
    assert!(stderr(&o).contains("bad.yaml:6:"));
    let o = run(d, &["check", "--config", "missing.yaml"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("missing.yaml"));
    // The embedded defaults are valid as they are.
    let o = run(d, &["check"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("OK"));
    // ...and says what serve would run: listeners, routes, policies.
    for want in [
        "proxy   127.0.0.1:8080",
        "admin   127.0.0.1:9901",
        "summarize  host *  prefix /",
        "policy protected",
    ] {
        assert!(stdout(&o).contains(want), "{want}: {}", stdout(&o));
    }
    // A corrupt token file fails check too.
    std::fs::write(d.join("tokens.yaml"), "tokens: [ {").unwrap();
    assert_eq!(run(d, &["check"]).status.code(), Some(2));
}

/// A `bentogate serve` child with its addresses, read from its JSON "listening" line. It runs in
/// its own process group, killed when this is dropped: a failed test leaves no server running.
struct Served {
    child: ProcessGroup,
    proxy: SocketAddr,
    admin: SocketAddr,
    lines: mpsc::Receiver<String>,
}

fn serve(config: &str) -> Served {
    let child = ProcessGroup::spawn(
        bin()
            .args(["serve", "--config", config])
            .env_remove("RUST_LOG")
            .stderr(Stdio::piped())
            .stdout(Stdio::null()),
    );
    let (tx, lines) = mpsc::channel();
    let unbound: SocketAddr = "0.0.0.0:0".parse().unwrap();
    let mut served = Served {
        child,
        proxy: unbound,
        admin: unbound,
        lines,
    };
    let err = served.child.0.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let line = served
            .lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("no listening line");
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        if v["message"] == "listening" {
            served.proxy = v["proxy_addr"].as_str().unwrap().parse().unwrap();
            served.admin = v["admin_addr"].as_str().unwrap().parse().unwrap();
            return served;
        }
    }
}

fn sigterm(child: &Child) {
    assert!(Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap()
        .success());
}

fn wait_exit(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        assert!(Instant::now() < deadline, "bentogate did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_logs_one_access_line_per_request_and_never_a_token() {
    let u = upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), u.addr, "log: {format: json, access: true}\n");
    let (uid, value) = add_token(&dir.path().join("tokens.yaml"), Grant::to(&["a"]));
    let mut s = serve(&config);
    assert_eq!(
        status(s.proxy, "/v1/predict?secret=q", Some(&value)).await,
        StatusCode::OK
    );
    assert_eq!(
        status(s.proxy, "/v1/predict", None).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        status(
            s.proxy,
            "/v1/predict",
            Some("bgt_wrongwrongwrongwrongwrongwrongwrong1")
        )
        .await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        send(&client(), s.admin, "/healthz", &[]).await.status,
        StatusCode::OK
    );
    sigterm(&s.child.0);
    assert!(wait_exit(&mut s.child.0, Duration::from_secs(10)).success());
    let lines: Vec<String> = s.lines.try_iter().collect();
    let all = lines.join("\n");
    assert!(!all.contains(&value), "a token value reached the log");
    assert!(
        !all.to_lowercase().contains("bearer"),
        "an Authorization header reached the log"
    );
    let access: Vec<serde_json::Value> = lines
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["target"] == "bentogate::access")
        .collect();
    assert_eq!(access.len(), 3, "{all}");
    let ok = &access[0];
    assert_eq!(ok["method"], "GET");
    assert_eq!(ok["path"], "/v1/predict", "the query string is not logged");
    assert_eq!(ok["deployment"], "a");
    assert_eq!(ok["status"], 200);
    assert_eq!(ok["decision"], "allowed");
    assert_eq!(ok["token_uid"], uid.as_str());
    assert!(ok["latency_us"].is_u64());
    assert_eq!(access[1]["decision"], "unauthorized");
    assert_eq!(access[1]["token_uid"], "-");

    // access: false turns the lines off.
    let quiet = write_config(dir.path(), u.addr, "log: {format: json, access: false}\n");
    let mut s = serve(&quiet);
    assert_eq!(status(s.proxy, "/", Some(&value)).await, StatusCode::OK);
    sigterm(&s.child.0);
    assert!(wait_exit(&mut s.child.0, Duration::from_secs(10)).success());
    assert!(!s.lines.try_iter().any(|l| l.contains("bentogate::access")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_in_flight_requests_refuses_new_ones_and_exits_0() {
    let u = upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        u.addr,
        "log: {format: json, access: false}\nlimits: {drain_timeout: 20s}\n",
    );
    let (_, value) = add_token(&dir.path().join("tokens.yaml"), Grant::to(&["a"]));
    let mut s = serve(&config);
    let req = http::Request::get(format!("http://{}/stream", s.proxy))
        .header("authorization", format!("Bearer {value}"))
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    let res = client().request(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    use http_body_util::BodyExt;
    let mut body = res.into_body();
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(first, "first\n");

    sigterm(&s.child.0);
    let proxy = s.proxy;
    eventually(Duration::from_secs(5), || async move {
        tokio::net::TcpStream::connect(proxy).await.is_err()
    })
    .await;
    assert!(
        s.child.0.try_wait().unwrap().is_none(),
        "exited with a request in flight"
    );
    u.release.notify_one();
    let rest = body.collect().await.unwrap().to_bytes();
    assert_eq!(rest, "last\n");
    assert_eq!(
        wait_exit(&mut s.child.0, Duration::from_secs(10)).code(),
        Some(0)
    );
}

/// Runs the CLI as a remote client of `admin`, with `key` in BENTO_CLOUD_API_KEY.
fn remote(dir: &Path, admin: SocketAddr, key: &str, args: &[&str]) -> Output {
    bin()
        .current_dir(dir)
        .args(args)
        .args(["--endpoint", &format!("http://{admin}")])
        .env_remove("BENTOGATE_CONFIG")
        .env_remove("BENTO_CLOUD_API_ENDPOINT")
        .env("BENTO_CLOUD_API_KEY", key)
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_remote_cli_manages_tokens_and_members_and_every_change_is_audited() {
    let u = upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let config = write_config(d, u.addr, "log: {format: json, access: false}\n");
    // Bootstrap with the local CLI: an organization token that may administer, holding what
    // it will delegate (a new token grants no more than its creator holds).
    let boot = run(
        d,
        &[
            "token",
            "create",
            "boot",
            "--scope",
            "api",
            "--scope",
            "write_organization",
            "--all-deployments",
            "--config",
            &config,
            "-o",
            "json",
        ],
    );
    assert!(boot.status.success(), "{}", stderr(&boot));
    let key: serde_json::Value = serde_json::from_str(&stdout(&boot)).unwrap();
    let key = key["token"].as_str().unwrap().to_owned();
    let mut s = serve(&config);

    let created = remote(
        d,
        s.admin,
        &key,
        &[
            "token",
            "create",
            "remote",
            "--deployment",
            "a",
            "--expires",
            "30d",
            "--description",
            "via API",
            "-o",
            "json",
        ],
    );
    assert!(created.status.success(), "{}", stderr(&created));
    let v: serde_json::Value = serde_json::from_str(&stdout(&created)).unwrap();
    let value = v["token"].as_str().unwrap().to_owned();
    let uid = v["uid"].as_str().unwrap().to_owned();
    assert_eq!(v["deployments"], serde_json::json!(["a"]));
    assert_eq!(status(s.proxy, "/", Some(&value)).await, StatusCode::OK);

    // The same record prints the same, remote or local.
    let remote_get = remote(d, s.admin, &key, &["token", "get", &uid, "-o", "json"]);
    let local_get = run(
        d,
        &["token", "get", &uid, "--config", &config, "-o", "json"],
    );
    assert!(remote_get.status.success(), "{}", stderr(&remote_get));
    assert_eq!(stdout(&remote_get), stdout(&local_get));
    assert!(!stdout(&remote_get).contains(&value));
    let table = remote(d, s.admin, &key, &["token", "list", "--search", "rem"]);
    assert!(
        stdout(&table).contains("remote") && !stdout(&table).contains("boot"),
        "{}",
        stdout(&table)
    );
    // BENTO_CLOUD_API_ENDPOINT works instead of --endpoint.
    let by_env = bin()
        .current_dir(d)
        .args(["token", "list", "-o", "json"])
        .env_remove("BENTOGATE_CONFIG")
        .env("BENTO_CLOUD_API_ENDPOINT", format!("http://{}", s.admin))
        .env("BENTO_CLOUD_API_KEY", &key)
        .output()
        .unwrap();
    let listed: serde_json::Value = serde_json::from_str(&stdout(&by_env)).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 2, "{listed}");

    for args in [
        &["member", "add", "ann", "--email", "ann@example.com"][..],
        &["member", "promote", "ann"][..],
    ] {
        let o = remote(d, s.admin, &key, args);
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
    }
    let members = remote(d, s.admin, &key, &["member", "list", "-o", "json"]);
    assert!(
        stdout(&members).contains("\"admin\""),
        "{}",
        stdout(&members)
    );
    let deleted = remote(d, s.admin, &key, &["token", "delete", &uid]);
    assert!(deleted.status.success(), "{}", stderr(&deleted));
    assert_eq!(
        status(s.proxy, "/", Some(&value)).await,
        StatusCode::UNAUTHORIZED
    );
    let gone = remote(d, s.admin, &key, &["token", "get", &uid]);
    assert_eq!(gone.status.code(), Some(1));
    assert!(stderr(&gone).contains("no token"), "{}", stderr(&gone));
    // Ann is the only active admin: the control plane keeps her (409, exit 1).
    for args in [
        &["member", "remove", "ann"][..],
        &["member", "deactivate", "ann"],
    ] {
        let kept = remote(d, s.admin, &key, args);
        assert_eq!(kept.status.code(), Some(1), "{args:?}");
        assert!(
            stderr(&kept).contains("409") && stderr(&kept).contains("last active admin"),
            "{}",
            stderr(&kept)
        );
    }
    for args in [
        &["member", "add", "cy", "--admin"][..],
        &["member", "add", "dan"][..],
        &["member", "deactivate", "dan"][..],
    ] {
        let o = remote(d, s.admin, &key, args);
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
    }
    let removed = remote(d, s.admin, &key, &["member", "remove", "ann"]);
    assert!(removed.status.success(), "{}", stderr(&removed));

    // Refusals: a missing key is a usage error (2); a dead one is a runtime failure (1).
    let no_key = bin()
        .current_dir(d)
        .args([
            "token",
            "list",
            "--endpoint",
            &format!("http://{}", s.admin),
        ])
        .env_remove("BENTO_CLOUD_API_KEY")
        .output()
        .unwrap();
    assert_eq!(no_key.status.code(), Some(2));
    assert!(stderr(&no_key).contains("BENTO_CLOUD_API_KEY"));
    let bad = remote(
        d,
        s.admin,
        "bgt_wrongwrongwrongwrongwrongwrongwrong1",
        &["token", "list"],
    );
    assert_eq!(bad.status.code(), Some(1));
    assert!(stderr(&bad).contains("401"), "{}", stderr(&bad));
    let import = remote(d, s.admin, &key, &["token", "import", "x.yaml"]);
    assert_eq!(import.status.code(), Some(2));

    sigterm(&s.child.0);
    assert!(wait_exit(&mut s.child.0, Duration::from_secs(10)).success());
    let lines: Vec<String> = s.lines.try_iter().collect();
    let all = lines.join("\n");
    assert!(
        !all.contains(&value) && !all.contains(&key),
        "a token value reached the log"
    );
    let audit: Vec<serde_json::Value> = lines
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["target"] == "bentogate::audit")
        .collect();
    let find = |action: &str, outcome: &str| {
        audit
            .iter()
            .find(|a| a["action"] == action && a["outcome"] == outcome)
            .unwrap_or_else(|| panic!("no audit line for {action} {outcome}:\n{all}"))
            .clone()
    };
    let made = find("token.create", "done");
    assert_eq!(made["subject"], uid.as_str());
    assert_eq!(made["actor"], "admin");
    assert!(made["actor_uid"].is_string());
    assert_eq!(find("token.delete", "done")["subject"], uid.as_str());
    assert_eq!(find("member.add", "done")["subject"], "ann");
    assert_eq!(find("member.promote", "done")["subject"], "ann");
    assert_eq!(find("member.remove", "done")["subject"], "ann");
    assert_eq!(find("member.deactivate", "done")["subject"], "dan");
    assert_eq!(find("member.remove", "failed")["subject"], "ann");
    find("authorize", "refused");
}

/// What a request sends never comes back in an answer or reaches the log: every create field,
/// malformed JSON, member names in bodies and paths, an unknown method, each carrying a marker.
/// Audit lines name only validated subjects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_never_answers_or_logs_what_a_request_sent() {
    const M: &str = "MARKER";
    let u = upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let config = write_config(d, u.addr, "log: {format: json, access: false}\n");
    // Reaches deployment `a` only, expires in a day, no monitoring: every wider grant fails.
    let boot = run(
        d,
        &[
            "token",
            "create",
            "boot",
            "--scope",
            "api",
            "--scope",
            "write_organization",
            "--deployment",
            "a",
            "--expires",
            "1d",
            "--config",
            &config,
            "-o",
            "json",
        ],
    );
    assert!(boot.status.success(), "{}", stderr(&boot));
    let key: serde_json::Value = serde_json::from_str(&stdout(&boot)).unwrap();
    let key = key["token"].as_str().unwrap().to_owned();
    let s = serve(&config);

    let soon = bentogate::clock::format(bentogate::clock::now() + 3_600);
    let calls: Vec<(&str, &str, String)> = vec![
        ("POST", "/api/v1/api_tokens", r#"{"name":"MARKER","scopes":["MARKER"]}"#.into()),
        ("POST", "/api/v1/api_tokens", r#"{"name":"MARKER","deployments":["a"],"expired_at":"MARKER"}"#.into()),
        ("POST", "/api/v1/api_tokens", r#"{"name":"MARKER","deployments":"MARKER"}"#.into()),
        ("POST", "/api/v1/api_tokens", r#"{"name":"MARKER","deployments":[{"MARKER":1}]}"#.into()),
        ("POST", "/api/v1/api_tokens", r#"{"name":"MARKER","description":"MARKER","deployments":["MARKER"],"expired_at":"2001-01-01 00:00:00.000000"}"#.into()),
        ("POST", "/api/v1/api_tokens", r#"{"name":"MARKER","deployments":["MARKER"]}"#.into()),
        ("POST", "/api/v1/api_tokens", r#"{"name":"MARKER","all_deployments":true}"#.into()),
        ("POST", "/api/v1/api_tokens", format!(r#"{{"name":"MARKER","monitoring":true,"expired_at":"{soon}"}}"#)),
        ("POST", "/api/v1/api_tokens", r#"{"name":"MARKER","deployments":["a"]}"#.into()),
        ("POST", "/api/v1/api_tokens", r#"{"name":"MARKER","deployments":["a"],"expired_at":"2999-01-01T00:00:00Z"}"#.into()),
        ("POST", "/api/v1/api_tokens", format!(r#"{{"name":"MARKER","scopes":["read_cluster"],"expired_at":"{soon}"}}"#)),
        ("POST", "/api/v1/api_tokens", r#"{"MARKER":"MARKER"}"#.into()),
        ("POST", "/api/v1/api_tokens", r#"{"name":MARKER}"#.into()),
        ("POST", "/api/v1/members", r#"{"name":"MARKER x"}"#.into()),
        ("POST", "/api/v1/members", r#"{"name":"MARKER","admin":"MARKER"}"#.into()),
        ("POST", "/api/v1/members", r#"{"MARKER":1}"#.into()),
        ("DELETE", "/api/v1/members/MARKER%20x", String::new()),
        ("POST", "/api/v1/members/MARKER%2F..%2Fx/promote", String::new()),
        ("POST", "/api/v1/members/MARKER%3Cx%3E/deactivate", String::new()),
        ("MARKER", "/api/v1/api_tokens", String::new()),
        ("MARKER", "/api/v1/MARKER", String::new()),
    ];
    for (method, path, body) in &calls {
        let a = request(
            &client(),
            method,
            s.admin,
            path,
            &[("x-yatai-api-token", &key)],
            body,
        )
        .await;
        assert!(
            a.status.is_client_error(),
            "{method} {path} {body}: {}",
            a.status
        );
        assert!(!a.body.contains(M), "{method} {path} {body}: {}", a.body);
    }
    let listed = remote(d, s.admin, &key, &["token", "list", "-o", "json"]);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&stdout(&listed))
            .unwrap()
            .as_array()
            .unwrap()
            .len(),
        1,
        "only boot: every refused create wrote nothing"
    );

    let mut s = s;
    sigterm(&s.child.0);
    assert!(wait_exit(&mut s.child.0, Duration::from_secs(10)).success());
    let lines: Vec<String> = s.lines.try_iter().collect();
    let all = lines.join("\n");
    assert!(
        !all.contains(M),
        "a request's content reached the log:\n{all}"
    );
    let audit: Vec<serde_json::Value> = lines
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["target"] == "bentogate::audit")
        .collect();
    let creates: Vec<&serde_json::Value> = audit
        .iter()
        .filter(|a| a["action"] == "token.create")
        .collect();
    assert_eq!(creates.len(), 13, "every failed create is audited:\n{all}");
    for c in &creates {
        assert_eq!(c["subject"], "(new token)", "{c}");
        assert!(c.get("name").is_none(), "{c}");
    }
    assert!(
        creates.iter().filter(|c| c["outcome"] == "refused").count() == 6,
        "the attenuation refusals are audited as refused:\n{all}"
    );
    for a in audit
        .iter()
        .filter(|a| a["action"].as_str().unwrap().starts_with("member."))
    {
        assert_eq!(a["subject"], "(not a member name)", "{a}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_routes_and_refuses_a_bad_config() {
    let u = upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), u.addr, "log: {format: json, access: false}\n");
    let mut s = serve(&config);
    assert_eq!(status(s.proxy, "/b", None).await, StatusCode::UNAUTHORIZED);
    // Both outcomes are exported from start, at 0, and count every SIGHUP.
    let reloads = |text: &str, outcome: &str| -> Option<f64> {
        let series = format!("bentogate_config_reloads_total{{outcome=\"{outcome}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(series.as_str()))
            .map(|v| v.trim().parse().unwrap())
    };
    let m = metrics(s.admin).await;
    assert_eq!(reloads(&m, "success"), Some(0.0), "{m}");
    assert_eq!(reloads(&m, "failure"), Some(0.0), "{m}");
    let hup = |child: &Child| {
        assert!(Command::new("kill")
            .args(["-HUP", &child.id().to_string()])
            .status()
            .unwrap()
            .success());
    };
    // A new public route for /b.
    let text = std::fs::read_to_string(&config).unwrap();
    let with_b = format!(
        "{text}  - name: b\n    path_prefix: /b\n    upstream: \"http://{}\"\n    policy: public\n",
        u.addr
    );
    std::fs::write(&config, &with_b).unwrap();
    hup(&s.child.0);
    until_status(s.proxy, "/b", None, StatusCode::OK).await;
    // A broken file: refused with a log line naming the problem; the running routes stay.
    std::fs::write(&config, with_b.replace("policy: public", "policy: publik")).unwrap();
    hup(&s.child.0);
    let deadline = Instant::now() + Duration::from_secs(5);
    let refused = loop {
        let line = s
            .lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("no reload-refused line");
        if line.contains("reload refused") {
            break line;
        }
    };
    assert!(refused.contains("publik"), "{refused}");
    assert_eq!(status(s.proxy, "/b", None).await, StatusCode::OK);
    let m = metrics(s.admin).await;
    assert_eq!(reloads(&m, "success"), Some(1.0), "{m}");
    assert_eq!(reloads(&m, "failure"), Some(1.0), "{m}");
    // A listener that cannot be rebound is named, kept, and not recorded as applied: a second
    // SIGHUP with the same file says so again (it compares against what runs).
    let moved = with_b.replace(
        "listeners: [{address: \"127.0.0.1:0\"}]",
        "listeners: [{address: \"127.0.0.1:1\"}]",
    );
    assert_ne!(moved, with_b, "the listener line is in the file");
    std::fs::write(&config, &moved).unwrap();
    for round in 0..2 {
        hup(&s.child.0);
        // Each SIGHUP ends with its "configuration reloaded" line; the warning comes before.
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut warned = None;
        loop {
            let line = s
                .lines
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .expect("no reload line");
            if line.contains("cannot be rebound") {
                warned = Some(line);
            } else if line.contains("configuration reloaded") {
                break;
            }
        }
        let warned = warned.unwrap_or_else(|| panic!("reload {round} did not name the listener"));
        assert!(warned.contains("127.0.0.1:1"), "{warned}");
    }
    assert_eq!(status(s.proxy, "/b", None).await, StatusCode::OK);
    sigterm(&s.child.0);
    assert!(wait_exit(&mut s.child.0, Duration::from_secs(10)).success());
}
