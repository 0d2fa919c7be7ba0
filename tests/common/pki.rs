//! A test CA and the certificates it signs (rcgen), written as PEM files: servers, clients and
//! a CA of their own for "wrong CA" cases.

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};

/// A CA whose certificate is `<dir>/<name>-ca.pem`.
pub struct Pki {
    ca: rcgen::Certificate,
    ca_key: KeyPair,
    pub dir: PathBuf,
    name: String,
}

/// One issued certificate's files.
pub struct Leaf {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Pki {
    pub fn new(dir: &Path, name: &str) -> Pki {
        let ca_key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, format!("bentogate test CA {name}"));
        let ca = params.self_signed(&ca_key).unwrap();
        let pki = Pki {
            ca,
            ca_key,
            dir: dir.to_owned(),
            name: name.to_owned(),
        };
        std::fs::write(pki.ca_file(), pki.ca.pem()).unwrap();
        pki
    }

    pub fn ca_file(&self) -> PathBuf {
        self.dir.join(format!("{}-ca.pem", self.name))
    }

    /// Issues a certificate for `names` (DNS names or IP addresses), valid for `days` from now
    /// (rcgen's default when `None`), written to `<file>.crt` / `<file>.key` (key first).
    pub fn leaf_for(&self, file: &str, names: &[&str], days: Option<i64>) -> Leaf {
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        if let Some(first) = names.first() {
            params.distinguished_name.push(DnType::CommonName, *first);
        }
        if let Some(days) = days {
            let now = time::OffsetDateTime::now_utc();
            params.not_before = now - time::Duration::days(1);
            params.not_after = now + time::Duration::days(days);
        }
        let cert = params.signed_by(&key, &self.ca, &self.ca_key).unwrap();
        let leaf = Leaf {
            cert: self.dir.join(format!("{file}.crt")),
            key: self.dir.join(format!("{file}.key")),
        };
        std::fs::write(&leaf.key, key.serialize_pem()).unwrap();
        std::fs::write(&leaf.cert, cert.pem()).unwrap();
        leaf
    }

    pub fn leaf(&self, file: &str, names: &[&str]) -> Leaf {
        self.leaf_for(file, names, None)
    }
}
