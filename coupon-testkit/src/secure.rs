//! Servers a test starts with TLS and authentication, on free loopback ports, with the
//! certificates of a [`Pki`]: a TLS-only Redis, a MariaDB that requires secure transport, and
//! (in `kafka`) a broker with TLS and SCRAM. The machine's shared servers stay plaintext.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::free_port;
use crate::tls::{Pair, Pki};

/// Waits up to 20 s until something accepts connections on `port`.
fn wait_listening(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "{what} did not listen on port {port} within 20 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn temp_dir(kind: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "coupon-{kind}-{}-{}",
        std::process::id(),
        free_port()
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// A redis-server that serves TLS only (`--port 0 --tls-port`), asks clients for a certificate
/// of the [`Pki`]'s authority (`tls-auth-clients yes`) and knows one ACL user besides a disabled
/// `default`: [`TlsRedis::USER`] with [`TlsRedis::PASSWORD`]. Killed when dropped.
pub struct TlsRedis {
    /// The TLS port.
    pub port: u16,
    dir: PathBuf,
    ca: PathBuf,
    child: Option<Child>,
}

impl TlsRedis {
    /// The ACL user.
    pub const USER: &str = "coupon";
    /// Its password.
    pub const PASSWORD: &str = "s3cret-Pass";

    /// Starts the server with the certificate `pair` (normally `pki.server`).
    pub fn start(pki: &Pki, pair: &Pair) -> Self {
        let mut server = Self {
            port: free_port(),
            dir: temp_dir("tls-redis"),
            ca: pki.ca.clone(),
            child: None,
        };
        server.restart_with(pair);
        server
    }

    /// Kills the server and starts it again on the same port with the certificate `pair`: how a
    /// test puts a server's wrong certificate right.
    pub fn restart_with(&mut self, pair: &Pair) {
        self.kill();
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", "0"])
            .args(["--tls-port", &self.port.to_string()])
            .arg("--tls-cert-file")
            .arg(&pair.cert)
            .arg("--tls-key-file")
            .arg(&pair.key)
            .arg("--tls-ca-cert-file")
            .arg(&self.ca)
            .args(["--tls-auth-clients", "yes"])
            .args(["--user", "default", "off"])
            .args([
                "--user",
                Self::USER,
                "on",
                &format!(">{}", Self::PASSWORD),
                "~*",
                "&*",
                "+@all",
            ])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("redis-server on PATH (scripts/services up installs it)");
        self.child = Some(child);
        wait_listening(self.port, "the TLS redis-server");
    }

    /// `rediss://coupon:<password>@127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!(
            "rediss://{}:{}@127.0.0.1:{}",
            Self::USER,
            Self::PASSWORD,
            self.port
        )
    }

    /// Kills the server (SIGKILL).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A MariaDB of the test's own that requires secure transport (`require_secure_transport=ON`,
/// `ssl_cert`, `ssl_key`, `ssl_ca` of a [`Pki`]), with one user [`TlsMariaDb::USER`] allowed
/// from 127.0.0.1. Its data directory is made by `mariadb-install-db`; killed and removed when
/// dropped.
pub struct TlsMariaDb {
    /// The TCP port.
    pub port: u16,
    dir: PathBuf,
    ca: PathBuf,
    child: Option<Child>,
}

impl TlsMariaDb {
    /// The user.
    pub const USER: &str = "coupon";
    /// Its password.
    pub const PASSWORD: &str = "Db-pass@1";

    /// Makes the data directory, starts the server with the certificate `pair` (normally
    /// `pki.server`) and creates the user.
    pub fn start(pki: &Pki, pair: &Pair) -> Self {
        let dir = temp_dir("tls-mariadb");
        let installed = Command::new("mariadb-install-db")
            .arg("--no-defaults")
            .arg(format!("--datadir={}", dir.join("data").display()))
            .args([
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
                "--user=root",
            ])
            .stdout(Stdio::null())
            .output()
            .expect("mariadb-install-db on PATH (Debian's mariadb-server)");
        assert!(
            installed.status.success(),
            "mariadb-install-db: {}",
            String::from_utf8_lossy(&installed.stderr)
        );
        let mut server = Self {
            port: free_port(),
            dir,
            ca: pki.ca.clone(),
            child: None,
        };
        server.restart_with(pair);
        server.sql(&format!(
            "CREATE USER '{user}'@'127.0.0.1' IDENTIFIED BY '{password}'; \
             GRANT ALL ON *.* TO '{user}'@'127.0.0.1';",
            user = Self::USER,
            password = Self::PASSWORD
        ));
        server
    }

    /// Kills the server and starts it again on the same port and data with the certificate
    /// `pair`.
    pub fn restart_with(&mut self, pair: &Pair) {
        self.kill();
        let socket = self.socket();
        let _ = std::fs::remove_file(&socket);
        let child = Command::new("mariadbd")
            .arg("--no-defaults")
            .arg(format!("--datadir={}", self.dir.join("data").display()))
            .arg(format!("--socket={}", socket.display()))
            .arg(format!(
                "--pid-file={}",
                self.dir.join("mariadb.pid").display()
            ))
            .arg(format!(
                "--log-error={}",
                self.dir.join("error.log").display()
            ))
            .args(["--user=root", "--bind-address=127.0.0.1"])
            .arg(format!("--port={}", self.port))
            .arg(format!("--ssl-cert={}", pair.cert.display()))
            .arg(format!("--ssl-key={}", pair.key.display()))
            .arg(format!("--ssl-ca={}", self.ca.display()))
            .args([
                "--require-secure-transport=ON",
                "--skip-name-resolve",
                "--innodb-buffer-pool-size=32M",
                "--innodb-log-file-size=16M",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mariadbd on PATH (Debian's mariadb-server)");
        self.child = Some(child);
        wait_listening(self.port, "the TLS mariadbd");
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.try_sql("SELECT 1") {
            assert!(
                Instant::now() < deadline,
                "mariadbd did not answer on its socket within 30 s; see {}",
                self.dir.join("error.log").display()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `mysql://coupon:<password>@127.0.0.1:<port>/<database>`, the password escaped.
    pub fn url(&self, database: &str) -> String {
        format!(
            "mysql://{}:{}@127.0.0.1:{}/{database}",
            Self::USER,
            Self::PASSWORD.replace('@', "%40"),
            self.port
        )
    }

    /// Runs `sql` as root over the unix socket (which counts as secure transport).
    ///
    /// # Panics
    ///
    /// When it fails.
    pub fn sql(&self, sql: &str) -> String {
        let out = self.mariadb(sql);
        assert!(
            out.status.success(),
            "mariadb -e {sql:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn try_sql(&self, sql: &str) -> bool {
        self.mariadb(sql).status.success()
    }

    fn mariadb(&self, sql: &str) -> std::process::Output {
        Command::new("mariadb")
            .arg("--no-defaults")
            .arg(format!("--socket={}", self.socket().display()))
            .args(["-uroot", "-N", "-B", "-e", sql])
            .output()
            .expect("mariadb on PATH")
    }

    fn socket(&self) -> PathBuf {
        self.dir.join("mariadb.sock")
    }

    /// Kills the server (SIGKILL).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The data directory, for a test that reads the server's error log.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for TlsMariaDb {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
