//! What deploy/ ships is usable as it is: every bentogate configuration in it (the image's and
//! the one in each Kubernetes layout's ConfigMap) is valid, keeps the token API off the network
//! where it should, and the Dockerfile keeps the promises the README makes. The manifests
//! themselves are linted by deploy/lint/run.sh (kubernetes-validate, checkov, hadolint), which
//! .ci/run calls.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use bentogate::config::Config;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The `config.yaml` of a layout's ConfigMap, with the Secret-mounted URL file pointed at `url`.
fn layout_config(layout: &str, url: &Path) -> Config {
    let path = root()
        .join("deploy/kubernetes")
        .join(layout)
        .join("configmap.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    let map: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    let config = map["data"]["config.yaml"]
        .as_str()
        .expect("data.config.yaml");
    let config = config.replace("/etc/bentogate/postgres/url", url.to_str().unwrap());
    Config::parse(
        &config,
        &path.display().to_string(),
        Path::new("/etc/bentogate/conf"),
    )
    .unwrap_or_else(|e| panic!("{layout}: {e}"))
}

fn url_file(dir: &Path) -> PathBuf {
    let url = dir.join("url");
    std::fs::write(&url, "postgres://bentogate@postgres.db:5432/bentogate\n").unwrap();
    url
}

#[test]
fn every_layout_config_is_valid_and_keeps_the_token_api_where_it_belongs() {
    let dir = tempfile::tempdir().unwrap();
    let url = url_file(dir.path());
    for layout in ["sidecar", "edge"] {
        let c = layout_config(layout, &url);
        assert!(
            c.admin.ip().is_loopback(),
            "{layout}: token API on {}",
            c.admin
        );
        assert_eq!(c.probes.map(|p| p.port()), Some(9902), "{layout}");
        assert!(c.shutdown.delay.as_secs() >= 5, "{layout}");
    }
    // The control plane serves the token API on the pod network (behind its NetworkPolicy) and
    // routes the same deployment names as the gateways, which `token create` checks against.
    let cp = layout_config("control-plane", &url);
    let edge = layout_config("edge", &url);
    assert_eq!(cp.admin.port(), 9901);
    let names = |c: &Config| {
        c.deployments
            .iter()
            .map(|d| d.name.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(names(&cp), names(&edge));
    assert!(cp.tokens.postgres.is_some() && edge.tokens.postgres.is_some());
    // The token API leaves the pod over TLS only.
    let tls = cp
        .admin_tls
        .expect("the control plane's admin listener serves TLS");
    assert_eq!(
        tls.certificates[0].cert,
        Path::new("/etc/bentogate/tls/tls.crt")
    );
}

#[test]
fn the_dockerfile_runs_as_a_numeric_user_with_its_config_named() {
    let text = std::fs::read_to_string(root().join("Dockerfile")).unwrap();
    assert!(text.contains("\nUSER 65532:65532\n"), "numeric USER");
    assert!(text.contains("ENV BENTOGATE_CONFIG=/etc/bentogate/config.yaml"));
    assert!(text.contains("/etc/bentogate/config.example.yaml"));
    for from in text.lines().filter(|l| l.starts_with("FROM ")) {
        assert!(from.contains("@sha256:"), "not pinned by digest: {from}");
    }
    let ignore = std::fs::read_to_string(root().join(".dockerignore")).unwrap();
    assert!(ignore.lines().next().is_some());
    // Everything the Dockerfile copies is let through .dockerignore.
    for copied in [
        "Cargo.toml",
        "Cargo.lock",
        "src/",
        "benches/",
        "deploy/container.yaml",
    ] {
        assert!(ignore.contains(&format!("!{copied}")), "{copied}");
    }
}
