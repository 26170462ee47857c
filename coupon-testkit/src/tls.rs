//! Certificates a test makes for the TLS servers it starts: a certificate authority, a server
//! certificate for `127.0.0.1` and `localhost`, a client certificate, and the wrong ones a test
//! tries (a server certificate from another authority, an expired one, one for another host).
//! Made with rcgen, written as PEM files in a directory of the test's own, removed on drop.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use time::{Duration, OffsetDateTime};

use crate::free_port;

/// A certificate and its private key, as PEM files.
#[derive(Clone, Debug)]
pub struct Pair {
    /// The certificate.
    pub cert: PathBuf,
    /// Its private key.
    pub key: PathBuf,
}

/// The certificates of one test, in a directory removed on drop.
pub struct Pki {
    dir: PathBuf,
    /// The authority every good certificate is signed by.
    pub ca: PathBuf,
    /// Another authority, which signed [`Pki::stranger`]: a wrong CA for the good servers.
    pub other_ca: PathBuf,
    /// A server certificate for `127.0.0.1` and `localhost`, signed by [`Pki::ca`]; usable as a
    /// client certificate too (a Redis Cluster's nodes show it to each other).
    pub server: Pair,
    /// A client certificate signed by [`Pki::ca`].
    pub client: Pair,
    /// A server certificate for `127.0.0.1` signed by [`Pki::other_ca`].
    pub stranger: Pair,
    /// A server certificate for `127.0.0.1` signed by [`Pki::ca`] that expired yesterday.
    pub expired: Pair,
    /// A server certificate signed by [`Pki::ca`] for `db.invalid` only.
    pub elsewhere: Pair,
}

impl Pki {
    /// Makes every certificate, in a new temp directory.
    pub fn new() -> Self {
        let dir =
            std::env::temp_dir().join(format!("coupon-pki-{}-{}", std::process::id(), free_port()));
        std::fs::create_dir_all(&dir).expect("the certificates' directory");
        let (ca_params, ca_key) = authority("coupon test CA");
        let ca_pem = ca_params.self_signed(&ca_key).expect("CA").pem();
        let ca = Issuer::new(ca_params, ca_key);
        let (other_params, other_key) = authority("another CA");
        let other_pem = other_params.self_signed(&other_key).expect("CA").pem();
        let other = Issuer::new(other_params, other_key);

        let local = ["127.0.0.1", "localhost"];
        let yesterday = OffsetDateTime::now_utc() - Duration::days(1);
        Self {
            ca: write(&dir, "ca.pem", &ca_pem),
            other_ca: write(&dir, "other-ca.pem", &other_pem),
            server: leaf(&dir, "server", &local, &ca, None),
            client: leaf(&dir, "client", &["coupon-client"], &ca, None),
            stranger: leaf(&dir, "stranger", &local, &other, None),
            expired: leaf(&dir, "expired", &local, &ca, Some(yesterday)),
            elsewhere: leaf(&dir, "elsewhere", &["db.invalid"], &ca, None),
            dir,
        }
    }

    /// The directory of the files.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Default for Pki {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn authority(name: &str) -> (CertificateParams, KeyPair) {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    (params, KeyPair::generate().expect("CA key"))
}

/// A certificate for `names`, signed by `issuer`, for servers and clients; expired at
/// `expired_at` when given.
fn leaf(
    dir: &Path,
    stem: &str,
    names: &[&str],
    issuer: &Issuer<'_, KeyPair>,
    expired_at: Option<OffsetDateTime>,
) -> Pair {
    let names: Vec<String> = names.iter().map(|name| (*name).to_owned()).collect();
    let mut params = CertificateParams::new(names.clone()).expect("certificate params");
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, &names[0]);
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    if let Some(end) = expired_at {
        params.not_before = end - Duration::days(30);
        params.not_after = end;
    }
    let key = KeyPair::generate().expect("key");
    let cert = params.signed_by(&key, issuer).expect("certificate");
    Pair {
        cert: write(dir, &format!("{stem}.pem"), &cert.pem()),
        key: write(dir, &format!("{stem}.key"), &key.serialize_pem()),
    }
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write a certificate");
    path
}
