//! TLS to MySQL, against a MariaDB of the test's own that requires secure transport, with
//! certificates the test makes: each `COUPON_DATABASE_SSL_MODE` does what the mysql client's
//! `--ssl-mode` does, a wrong certificate is refused naming the settings in use, and the sink's
//! database opens (created and migrated) over verified TLS once the server's certificate is
//! right. The machine's MariaDB stays plaintext and untouched.

use std::path::PathBuf;

use coupon_cli::{Database, SslMode};
use coupon_sink::db;
use coupon_testkit::{Pki, TlsMariaDb};
use mysql_async::prelude::Queryable;

fn settings(url: String, mode: Option<SslMode>, ca: Option<PathBuf>) -> Database {
    Database {
        database_url: url,
        database_ssl_mode: mode,
        database_ca_file: ca,
    }
}

/// Connects once with `settings`; the cipher in use, or the error as the log would show it.
async fn try_connect(settings: &Database) -> Result<String, String> {
    let opts = settings.opts().map_err(|err| format!("{err:#}"))?;
    let (mut conn, _) = settings
        .connect(opts)
        .await
        .map_err(|err| format!("{err:#}"))?;
    let cipher: Option<(String, String)> = conn
        .query_first("SHOW SESSION STATUS LIKE 'Ssl_cipher'")
        .await
        .map_err(|err| err.to_string())?;
    conn.disconnect().await.ok();
    Ok(cipher.map(|(_, cipher)| cipher).unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_ssl_mode_does_what_the_mysql_client_does() {
    let pki = Pki::new();
    // A certificate of the right authority, for another host.
    let mut server = TlsMariaDb::start(&pki, &pki.elsewhere);
    let url = server.url("mysql");
    let ca = Some(pki.ca.clone());

    // The default for a loopback host is plaintext, which this server refuses.
    let refused = try_connect(&settings(url.clone(), None, None))
        .await
        .unwrap_err();
    assert!(
        refused.contains("COUPON_DATABASE_SSL_MODE=disabled (unset"),
        "{refused}"
    );
    assert!(!refused.contains(TlsMariaDb::PASSWORD), "{refused}");

    // required and preferred: TLS without verification, whatever the certificate.
    for mode in [SslMode::Required, SslMode::Preferred] {
        let cipher = try_connect(&settings(url.clone(), Some(mode), None)).await;
        assert!(
            cipher.as_ref().is_ok_and(|c| !c.is_empty()),
            "{mode:?}: {cipher:?}"
        );
    }
    // verify_ca: the certificate's authority must be the CA given (not the system's roots).
    let unknown = try_connect(&settings(url.clone(), Some(SslMode::VerifyCa), None))
        .await
        .unwrap_err();
    assert!(unknown.contains("certificate verify failed"), "{unknown}");
    let cipher = try_connect(&settings(url.clone(), Some(SslMode::VerifyCa), ca.clone())).await;
    assert!(cipher.as_ref().is_ok_and(|c| !c.is_empty()), "{cipher:?}");
    // verify_identity: the certificate must also name the host, which this one does not.
    let mismatch = try_connect(&settings(
        url.clone(),
        Some(SslMode::VerifyIdentity),
        ca.clone(),
    ))
    .await
    .unwrap_err();
    assert!(
        mismatch.contains("COUPON_DATABASE_SSL_MODE=verify_identity")
            && mismatch.contains("COUPON_DATABASE_CA_FILE")
            && mismatch.contains("IP address mismatch"),
        "{mismatch}"
    );

    // An expired certificate is refused too.
    server.restart_with(&pki.expired);
    let expired = try_connect(&settings(url.clone(), Some(SslMode::VerifyCa), ca.clone()))
        .await
        .unwrap_err();
    assert!(expired.contains("certificate has expired"), "{expired}");

    // With the right certificate, the sink's database opens over verified TLS: created,
    // migrated, usable.
    server.restart_with(&pki.server);
    let sink_db = settings(
        server.url("coupon_tls"),
        Some(SslMode::VerifyIdentity),
        ca.clone(),
    );
    let pool = db::Database::new(&sink_db).unwrap().open().await.unwrap();
    let mut conn = pool.get_conn().await.unwrap();
    let migrations: Vec<u32> = conn
        .query("SELECT version FROM schema_migrations ORDER BY version")
        .await
        .unwrap();
    assert_eq!(migrations, [1, 2, 3]);
    let cipher: Option<(String, String)> = conn
        .query_first("SHOW SESSION STATUS LIKE 'Ssl_cipher'")
        .await
        .unwrap();
    assert!(
        cipher.is_some_and(|(_, c)| !c.is_empty()),
        "the pool's connections use TLS"
    );
    drop(conn);
    pool.disconnect().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preferred_falls_back_to_plaintext_on_a_server_without_tls() {
    // The machine's MariaDB offers no TLS (a server that does answers with TLS, as above).
    let url = format!("{}/mysql", coupon_testkit::mysql_server_url());
    let cipher = try_connect(&settings(url.clone(), Some(SslMode::Preferred), None)).await;
    let cipher = cipher.unwrap();
    let offers_tls = !cipher.is_empty();
    eprintln!("the machine's MariaDB offers TLS: {offers_tls}");
    if !offers_tls {
        let refused = try_connect(&settings(url, Some(SslMode::Required), None))
            .await
            .unwrap_err();
        assert!(
            refused.contains("COUPON_DATABASE_SSL_MODE=required"),
            "{refused}"
        );
    }
}
