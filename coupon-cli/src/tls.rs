//! TLS to Redis and to MySQL, from the settings of their groups: the certificates read from the
//! files the settings name, checked at start so that a missing or unreadable file stops the
//! process naming its setting, and the names of the settings in use, for the log line of a
//! connection that fails.
//!
//! Kafka's TLS and SASL are librdkafka's own properties (`COUPON_KAFKA_PROPERTIES`), handed to
//! it as they are.

use std::net::IpAddr;
use std::path::Path;

use anyhow::{Context, bail};
use clap::ValueEnum as _;
use mysql_async::{Conn, Opts, OptsBuilder, SslOpts};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::groups::{Database, Kafka, Redis, SslMode};
use crate::settings::redact;

/// The PEM files of the Redis TLS settings, read: what a `RedisTarget` of coupon-gate takes
/// (`with_tls(tls.ca, tls.client)`).
#[derive(Clone, Default)]
pub struct RedisTls {
    /// The certificate authorities that verify Redis (`COUPON_REDIS_CA_FILE`); `None`: the
    /// system's roots.
    pub ca: Option<Vec<u8>>,
    /// This client's certificate chain and private key (`COUPON_REDIS_CLIENT_CERT_FILE`,
    /// `COUPON_REDIS_CLIENT_KEY_FILE`), for mutual TLS.
    pub client: Option<(Vec<u8>, Vec<u8>)>,
}

/// Never prints the certificates, nor above all the key.
impl std::fmt::Debug for RedisTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisTls")
            .field("ca", &self.ca.as_ref().map(|_| "<PEM>"))
            .field("client", &self.client.as_ref().map(|_| "<PEM>"))
            .finish()
    }
}

impl Redis {
    /// Whether the URL or any cluster node is `rediss://`.
    pub fn uses_tls(&self) -> bool {
        if self
            .redis_cluster_nodes
            .iter()
            .any(|node| !node.trim().is_empty())
        {
            self.redis_cluster_nodes
                .iter()
                .any(|node| node.trim().starts_with("rediss://"))
        } else {
            self.redis_url.starts_with("rediss://")
        }
    }

    /// The certificates of the files named by `COUPON_REDIS_CA_FILE`,
    /// `COUPON_REDIS_CLIENT_CERT_FILE` and `COUPON_REDIS_CLIENT_KEY_FILE`; none when none is
    /// set (a `rediss://` address then verifies Redis against the system's roots).
    ///
    /// # Errors
    ///
    /// A file that cannot be read or holds no PEM certificate or key, a certificate without its
    /// key (or a key without its certificate), or a file given for an address that is not
    /// `rediss://`; each names its setting.
    pub fn tls(&self) -> anyhow::Result<RedisTls> {
        let client = match (&self.redis_client_cert_file, &self.redis_client_key_file) {
            (None, None) => None,
            (Some(cert), Some(key)) => Some((
                certificates(cert, "COUPON_REDIS_CLIENT_CERT_FILE")?,
                private_key(key, "COUPON_REDIS_CLIENT_KEY_FILE")?,
            )),
            (Some(_), None) => bail!(
                "COUPON_REDIS_CLIENT_CERT_FILE is set without COUPON_REDIS_CLIENT_KEY_FILE: \
                 a client certificate needs its key"
            ),
            (None, Some(_)) => bail!(
                "COUPON_REDIS_CLIENT_KEY_FILE is set without COUPON_REDIS_CLIENT_CERT_FILE: \
                 a client key needs its certificate"
            ),
        };
        let ca = match &self.redis_ca_file {
            Some(path) => Some(certificates(path, "COUPON_REDIS_CA_FILE")?),
            None => None,
        };
        if client.is_none() && ca.is_none() {
            return Ok(RedisTls::default());
        }
        if !self.uses_tls() {
            bail!(
                "COUPON_REDIS_CA_FILE or COUPON_REDIS_CLIENT_CERT_FILE is set, but {} names no \
                 rediss:// address: Redis would be reached in plaintext; use rediss://",
                self.address_settings()
            );
        }
        Ok(RedisTls { ca, client })
    }

    /// The settings that say how Redis is reached, for a log line about reaching it: e.g.
    /// `REDIS_URL, COUPON_REDIS_CA_FILE`.
    pub fn settings_in_use(&self) -> String {
        let mut names = vec![self.address_settings()];
        if self.redis_ca_file.is_some() {
            names.push("COUPON_REDIS_CA_FILE");
        }
        if self.redis_client_cert_file.is_some() {
            names.push("COUPON_REDIS_CLIENT_CERT_FILE, COUPON_REDIS_CLIENT_KEY_FILE");
        }
        names.join(", ")
    }

    fn address_settings(&self) -> &'static str {
        if self
            .redis_cluster_nodes
            .iter()
            .any(|node| !node.trim().is_empty())
        {
            "REDIS_CLUSTER_NODES"
        } else {
            "REDIS_URL"
        }
    }
}

/// Whether `host` (a name or an address, IPv6 in brackets or not) is this machine.
fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .trim_matches(['[', ']'])
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The host of `host:port` (or `[v6]:port`, or a bare host).
fn host_of(address: &str) -> &str {
    let address = address.trim();
    if let Some(rest) = address.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match address.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') && port.parse::<u16>().is_ok() => host,
        _ => address,
    }
}

impl Redis {
    /// A warning when Redis is reached in plaintext (`redis://`) at a host that is not this
    /// machine: a password, and every user id, then cross the network readable.
    pub fn plaintext_warning(&self) -> Option<String> {
        let nodes: Vec<&str> = if self
            .redis_cluster_nodes
            .iter()
            .any(|n| !n.trim().is_empty())
        {
            self.redis_cluster_nodes.iter().map(|n| n.trim()).collect()
        } else {
            vec![self.redis_url.trim()]
        };
        let remote: Vec<&str> = nodes
            .into_iter()
            .filter(|node| !node.starts_with("rediss://"))
            .map(|node| {
                let rest = node.split_once("://").map_or(node, |(_, rest)| rest);
                let rest = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
                host_of(rest.split('/').next().unwrap_or(rest))
            })
            .filter(|host| !is_loopback(host))
            .collect();
        (!remote.is_empty()).then(|| {
            format!(
                "{} reaches Redis at {} in plaintext (redis://): use rediss:// off this machine \
                 (README, Running against production services)",
                self.address_settings(),
                remote.join(", ")
            )
        })
    }
}

impl Kafka {
    /// A warning when the brokers are reached in plaintext (no `security.protocol`, or
    /// `PLAINTEXT`/`SASL_PLAINTEXT`) at hosts that are not this machine.
    pub fn plaintext_warning(&self) -> Option<String> {
        let protocol = self
            .kafka_properties
            .iter()
            .rev()
            .find(|(key, _)| key == "security.protocol")
            .map_or("PLAINTEXT", |(_, value)| value.as_str());
        if !protocol.eq_ignore_ascii_case("PLAINTEXT")
            && !protocol.eq_ignore_ascii_case("SASL_PLAINTEXT")
        {
            return None;
        }
        let remote: Vec<&str> = self
            .kafka_brokers
            .split(',')
            .map(host_of)
            .filter(|host| !host.is_empty() && !is_loopback(host))
            .collect();
        (!remote.is_empty()).then(|| {
            format!(
                "KAFKA_BROKERS reaches {} with security.protocol={protocol}: admissions cross \
                 the network readable; set security.protocol=SSL or SASL_SSL in \
                 COUPON_KAFKA_PROPERTIES (README, Running against production services)",
                remote.join(", ")
            )
        })
    }
}

impl Database {
    /// The SSL mode in effect: `COUPON_DATABASE_SSL_MODE`, or when unset `disabled` for a
    /// server on loopback (`localhost`, `127.0.0.0/8`, `::1`) and `verify_identity` for any other.
    ///
    /// # Errors
    ///
    /// A `DATABASE_URL` that does not parse.
    pub fn ssl_mode(&self) -> anyhow::Result<SslMode> {
        if let Some(mode) = self.database_ssl_mode {
            return Ok(mode);
        }
        let opts = self.url_opts()?;
        Ok(if is_loopback(opts.ip_or_hostname()) {
            SslMode::Disabled
        } else {
            SslMode::VerifyIdentity
        })
    }

    /// The connection options of `DATABASE_URL`, with TLS as [`Database::ssl_mode`] says and
    /// the CA of `COUPON_DATABASE_CA_FILE`. Under `preferred` they ask for TLS;
    /// [`Database::connect`] falls back to plaintext when the server offers none.
    ///
    /// # Errors
    ///
    /// A `DATABASE_URL` that does not parse, or a CA file that cannot be read or holds no
    /// certificate (named).
    pub fn opts(&self) -> anyhow::Result<OptsBuilder> {
        let mode = self.ssl_mode()?;
        let builder = OptsBuilder::from_opts(self.url_opts()?);
        let ssl = match mode {
            SslMode::Disabled => None,
            SslMode::Preferred | SslMode::Required => Some(
                SslOpts::default()
                    .with_danger_accept_invalid_certs(true)
                    .with_danger_skip_domain_validation(true),
            ),
            SslMode::VerifyCa => Some(SslOpts::default().with_danger_skip_domain_validation(true)),
            SslMode::VerifyIdentity => Some(SslOpts::default()),
        };
        let ssl = match (ssl, &self.database_ca_file) {
            (Some(ssl), Some(path)) => {
                let pem = certificates(path, "COUPON_DATABASE_CA_FILE")?;
                Some(
                    ssl.with_root_certs(vec![pem.into()])
                        .with_disable_built_in_roots(true),
                )
            }
            (ssl, _) => ssl,
        };
        Ok(builder.ssl_opts(ssl))
    }

    /// Connects once with `opts` (from [`Database::opts`]), and answers the options that
    /// reached the server: under `preferred`, a server that offers no TLS is connected to in
    /// plaintext, and the options without TLS are answered, for a pool to use.
    ///
    /// # Errors
    ///
    /// The server cannot be reached, or refuses the connection; the error names the settings
    /// in use.
    pub async fn connect(&self, opts: OptsBuilder) -> anyhow::Result<(Conn, OptsBuilder)> {
        let mode = self.ssl_mode()?;
        let first = Conn::new(opts.clone()).await;
        let (conn, opts) = match first {
            Err(mysql_async::Error::Driver(
                mysql_async::DriverError::NoClientSslFlagFromServer,
            )) if mode == SslMode::Preferred => {
                let plain = opts.ssl_opts(None);
                (Conn::new(plain.clone()).await, plain)
            }
            other => (other, opts),
        };
        // The driver's errors repeat their sources' text at every level: the innermost says it.
        let conn = conn.map_err(|err| {
            anyhow::anyhow!(
                "cannot connect to MySQL at {} ({}): {}",
                redact(&self.database_url),
                self.settings_in_use(),
                innermost(&err)
            )
        })?;
        Ok((conn, opts))
    }

    /// The settings that say how MySQL is reached, with the SSL mode in effect, for a log line
    /// about reaching it: e.g. `DATABASE_URL, COUPON_DATABASE_SSL_MODE=verify_identity`.
    pub fn settings_in_use(&self) -> String {
        let mode = match self.ssl_mode() {
            Ok(mode) => mode.to_possible_value().map(|v| v.get_name().to_owned()),
            Err(_) => None,
        };
        let mut names = String::from("DATABASE_URL");
        if let Some(mode) = mode {
            let unset = if self.database_ssl_mode.is_none() {
                " (unset: the default for this host)"
            } else {
                ""
            };
            names.push_str(&format!(", COUPON_DATABASE_SSL_MODE={mode}{unset}"));
        }
        if self.database_ca_file.is_some() {
            names.push_str(", COUPON_DATABASE_CA_FILE");
        }
        names
    }

    fn url_opts(&self) -> anyhow::Result<Opts> {
        Opts::from_url(&self.database_url)
            .with_context(|| format!("invalid DATABASE_URL {:?}", redact(&self.database_url)))
    }
}

/// What `err` says, once: the MySQL driver's errors repeat their sources' text at every level,
/// and the innermost (OpenSSL's error code) lacks the reason its wrapper adds. So: the shortest
/// level that holds the innermost's text and more, else the innermost.
fn innermost(err: &(dyn std::error::Error + 'static)) -> String {
    let mut texts = vec![err.to_string()];
    let mut inner = err;
    while let Some(source) = inner.source() {
        texts.push(source.to_string());
        inner = source;
    }
    let deepest = texts.pop().unwrap_or_default();
    texts
        .into_iter()
        .filter(|text| text.len() > deepest.len() && text.contains(&deepest))
        .min_by_key(String::len)
        .unwrap_or(deepest)
}

/// The PEM certificates of the file at `path`, named by `setting` in errors.
fn certificates(path: &Path, setting: &str) -> anyhow::Result<Vec<u8>> {
    let pem = read(path, setting)?;
    let found = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("{setting} ({}) is not PEM", path.display()))?;
    if found.is_empty() {
        bail!("{setting} ({}) holds no PEM certificate", path.display());
    }
    Ok(pem)
}

/// The PEM private key of the file at `path`, named by `setting` in errors.
fn private_key(path: &Path, setting: &str) -> anyhow::Result<Vec<u8>> {
    let pem = read(path, setting)?;
    // The parse error is not shown: it could quote the key.
    if PrivateKeyDer::from_pem_slice(&pem).is_err() {
        bail!("{setting} ({}) holds no PEM private key", path.display());
    }
    Ok(pem)
}

fn read(path: &Path, setting: &str) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read {setting} ({})", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn database(url: &str, mode: Option<SslMode>) -> Database {
        Database {
            database_url: url.to_owned(),
            database_ssl_mode: mode,
            database_ca_file: None,
        }
    }

    #[test]
    fn tls_to_mysql_is_off_by_default_on_loopback_only() {
        for url in [
            "mysql://root@127.0.0.1:3306/coupon",
            "mysql://root@localhost/coupon",
            "mysql://root@[::1]:3306/coupon",
        ] {
            assert_eq!(
                database(url, None).ssl_mode().unwrap(),
                SslMode::Disabled,
                "{url}"
            );
        }
        assert_eq!(
            database("mysql://app:pw@db.example.com/coupon", None)
                .ssl_mode()
                .unwrap(),
            SslMode::VerifyIdentity
        );
        assert_eq!(
            database("mysql://root@127.0.0.1/coupon", Some(SslMode::Required))
                .ssl_mode()
                .unwrap(),
            SslMode::Required
        );
    }

    #[test]
    fn plaintext_off_this_machine_is_warned_of() {
        assert_eq!(
            Redis::server("redis://127.0.0.1:6379/9").plaintext_warning(),
            None
        );
        assert_eq!(
            Redis::server("redis://:pw@[::1]:6379").plaintext_warning(),
            None
        );
        assert_eq!(
            Redis::server("rediss://cache.example.com:6379").plaintext_warning(),
            None
        );
        let warned = Redis::server("redis://app:p@ss@cache.example.com:6379")
            .plaintext_warning()
            .unwrap();
        assert!(
            warned.contains("REDIS_URL reaches Redis at cache.example.com in plaintext"),
            "{warned}"
        );
        assert!(!warned.contains("p@ss"), "{warned}");
        let cluster = Redis::cluster(vec![
            "10.0.0.1:7000".into(),
            "rediss://10.0.0.2:7000".into(),
        ]);
        let warned = cluster.plaintext_warning().unwrap();
        assert!(
            warned.contains("REDIS_CLUSTER_NODES reaches Redis at 10.0.0.1 in"),
            "{warned}"
        );

        let kafka = |brokers: &str, properties: &[(&str, &str)]| Kafka {
            kafka_brokers: brokers.to_owned(),
            kafka_properties: properties
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        };
        assert_eq!(
            kafka("127.0.0.1:9092,localhost:9093", &[]).plaintext_warning(),
            None
        );
        assert_eq!(
            kafka("b-1.example.com:9096", &[("security.protocol", "SASL_SSL")]).plaintext_warning(),
            None
        );
        let warned = kafka("127.0.0.1:9092,b-1.example.com:9092", &[])
            .plaintext_warning()
            .unwrap();
        assert!(
            warned.contains("reaches b-1.example.com with security.protocol=PLAINTEXT"),
            "{warned}"
        );
    }

    #[test]
    fn redis_certificates_need_a_tls_address_and_come_in_pairs() {
        let dir = std::env::temp_dir().join(format!("coupon-cli-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "").unwrap();

        let mut redis = Redis::server("rediss://127.0.0.1:6380");
        redis.redis_ca_file = Some(empty.clone());
        let err = redis.tls().unwrap_err().to_string();
        assert!(
            err.contains("COUPON_REDIS_CA_FILE") && err.contains("no PEM"),
            "{err}"
        );

        redis.redis_ca_file = Some(dir.join("missing.pem"));
        let err = format!("{:#}", redis.tls().unwrap_err());
        assert!(err.contains("cannot read COUPON_REDIS_CA_FILE"), "{err}");

        let mut redis = Redis::server("rediss://127.0.0.1:6380");
        redis.redis_client_cert_file = Some(empty.clone());
        let err = redis.tls().unwrap_err().to_string();
        assert!(
            err.contains("without COUPON_REDIS_CLIENT_KEY_FILE"),
            "{err}"
        );

        assert!(Redis::server("rediss://h:1").tls().unwrap().ca.is_none());
        assert!(Redis::server("rediss://h:1").uses_tls());
        assert!(!Redis::server("redis://h:1").uses_tls());
        assert!(Redis::cluster(vec!["rediss://h:1".into()]).uses_tls());
        std::fs::remove_dir_all(&dir).ok();
    }
}
