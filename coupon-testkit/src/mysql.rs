//! MySQL/MariaDB for tests: a database of the test's own on the machine's server, dropped when
//! the test ends.

use std::sync::atomic::{AtomicU32, Ordering};

use mysql_async::prelude::*;

/// The machine's server, without a database (`TEST_MYSQL_URL`, default
/// `mysql://root@127.0.0.1:3306`).
pub fn mysql_server_url() -> String {
    std::env::var("TEST_MYSQL_URL").unwrap_or_else(|_| "mysql://root@127.0.0.1:3306".to_owned())
}

/// A database name no other test (or run) uses; the database is dropped with this value.
pub struct ScratchDb {
    /// The database's name.
    pub name: String,
    server: String,
}

impl ScratchDb {
    /// A fresh name on the machine's server; the database itself is created by whoever
    /// connects to [`ScratchDb::url`] (the sink creates its database).
    pub fn new() -> Self {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or_default();
        Self {
            name: format!("coupon_test_{}_{nanos}_{n}", std::process::id()),
            server: mysql_server_url(),
        }
    }

    /// The database's URL, through `host:port` (the machine's server by default, or a proxy).
    pub fn url_via(&self, port: u16) -> String {
        format!("mysql://root@127.0.0.1:{port}/{}", self.name)
    }

    /// The database's URL on the machine's server.
    pub fn url(&self) -> String {
        format!("{}/{}", self.server.trim_end_matches('/'), self.name)
    }

    /// Whether the database exists and holds every table of `tables`: a sink that has just
    /// created the database may not have migrated it yet.
    pub async fn has_tables(&self, tables: &[&str]) -> bool {
        let pool = mysql_async::Pool::new(self.server.as_str());
        let mut found = 0;
        if let Ok(mut conn) = pool.get_conn().await {
            for table in tables {
                let hit: Option<String> = conn
                    .exec_first(
                        "SELECT TABLE_NAME FROM information_schema.TABLES \
                         WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?",
                        (&self.name, table),
                    )
                    .await
                    .unwrap_or_default();
                found += usize::from(hit.is_some());
            }
        }
        pool.disconnect().await.ok();
        found == tables.len()
    }

    /// Runs `sql` and returns the rows, for checks.
    pub async fn query<T: FromRow + Send + 'static>(&self, sql: &str) -> Vec<T> {
        let pool = mysql_async::Pool::new(self.url().as_str());
        let rows = pool
            .get_conn()
            .await
            .expect("mysql")
            .query(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        pool.disconnect().await.ok();
        rows
    }

    /// Runs `sql`, for setting up a case.
    pub async fn execute(&self, sql: &str) {
        let pool = mysql_async::Pool::new(self.url().as_str());
        pool.get_conn()
            .await
            .expect("mysql")
            .query_drop(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        pool.disconnect().await.ok();
    }
}

impl Default for ScratchDb {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for ScratchDb {
    fn drop(&mut self) {
        // Drop runs outside any async context the test may still hold: use a runtime of its own.
        let (server, name) = (self.server.clone(), self.name.clone());
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async {
                let pool = mysql_async::Pool::new(server.as_str());
                if let Ok(mut conn) = pool.get_conn().await {
                    let _ = conn
                        .query_drop(format!("DROP DATABASE IF EXISTS `{name}`"))
                        .await;
                }
                pool.disconnect().await.ok();
            });
        })
        .join();
    }
}
