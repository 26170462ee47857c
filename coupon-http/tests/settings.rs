//! The settings layers of the real binary: flags over the environment over the settings file
//! over the defaults, a settings file's unknown key or bad value refused at start naming the
//! key, and `--print-config` printing no secret. Nothing here needs a server: each run prints
//! its settings or is refused before it connects to anything.

use std::path::PathBuf;
use std::process::{Command, Output};

/// A settings file of this test's own, removed when dropped.
struct SettingsFile(PathBuf);

impl SettingsFile {
    fn new(name: &str, text: &str) -> Self {
        let path =
            std::env::temp_dir().join(format!("coupon-http-{}-{name}.toml", std::process::id()));
        std::fs::write(&path, text).expect("temp dir is writable");
        Self(path)
    }
}

impl Drop for SettingsFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Runs coupon-http with `args` and only the environment given (no COUPON_* or REDIS_* of the
/// machine's leak in).
fn coupon_http(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_coupon-http"))
        .args(args)
        .env_clear()
        .envs(env.iter().copied())
        .output()
        .expect("coupon-http runs")
}

fn stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).expect("text")
}

/// The printed line of `key`.
fn line<'a>(printed: &'a str, key: &str) -> &'a str {
    printed
        .lines()
        .find(|l| l.starts_with(&format!("{key} = ")))
        .unwrap_or_else(|| panic!("no {key} in:\n{printed}"))
}

#[test]
fn flags_beat_the_environment_which_beats_the_file_which_beats_the_defaults() {
    let file = SettingsFile::new(
        "layers",
        r#"
            http_addr = "127.0.0.1:9001"
            topic = "from_file"
            user_rate = 7
            trusted_proxies = ["10.0.0.0/8", "192.168.1.1"]
            kafka_properties = { "linger.ms" = 5 }
        "#,
    );
    let path = file.0.to_str().unwrap();
    let out = coupon_http(
        &["--config", path, "--user-rate", "9", "--print-config"],
        &[("COUPON_TOPIC", "from_env"), ("COUPON_USER_RATE", "8")],
    );
    let printed = stdout(&out);
    assert_eq!(line(&printed, "user_rate"), "user_rate = 9  # flag");
    assert_eq!(
        line(&printed, "topic"),
        r#"topic = "from_env"  # environment"#
    );
    assert_eq!(
        line(&printed, "http_addr"),
        r#"http_addr = "127.0.0.1:9001"  # settings file"#
    );
    assert_eq!(
        line(&printed, "trusted_proxies"),
        r#"trusted_proxies = ["10.0.0.0/8", "192.168.1.1"]  # settings file"#
    );
    assert_eq!(
        line(&printed, "kafka_properties"),
        r#"kafka_properties = ["linger.ms=5"]  # settings file"#
    );
    assert_eq!(
        line(&printed, "key_prefix"),
        r#"key_prefix = "coupon"  # default"#
    );
    assert!(printed.contains("# ip_rate is not set"), "{printed}");

    // COUPON_CONFIG names the file as --config does; what it prints is itself a settings file
    // that gives the same settings.
    let out = coupon_http(&["--print-config"], &[("COUPON_CONFIG", path)]);
    let printed = stdout(&out);
    assert_eq!(
        line(&printed, "topic"),
        r#"topic = "from_file"  # settings file"#
    );
    let again = SettingsFile::new("printed", &printed);
    let reprinted = stdout(&coupon_http(
        &["--config", again.0.to_str().unwrap(), "--print-config"],
        &[],
    ));
    let values = |text: &str| -> Vec<String> {
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| l.split("  #").next().unwrap().to_owned())
            .collect()
    };
    assert_eq!(values(&reprinted), values(&printed));
}

#[test]
fn an_unknown_key_or_a_bad_value_in_the_file_stops_the_start_naming_the_key() {
    for (text, key, why) in [
        (
            r#"htp_addr = "127.0.0.1:9001""#,
            "htp_addr",
            "unknown setting",
        ),
        (
            r#"http_addr = "not an address""#,
            "http_addr",
            "invalid value",
        ),
        (
            "topic_partitions = 0",
            "topic_partitions",
            "0 is not in 1..",
        ),
        (r#"identity = "cookie""#, "identity", "cookie"),
        ("user_rate = [[1]]", "user_rate", "give a string"),
    ] {
        let file = SettingsFile::new("bad", text);
        let out = coupon_http(&["--config", file.0.to_str().unwrap()], &[]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{text}: {stderr}");
        assert!(
            stderr.contains(&format!("`{key}`")) && stderr.contains(why),
            "{text}: {stderr}"
        );
    }
    let out = coupon_http(&["--config", "/nonexistent/coupon-http.toml"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read the settings file"));
}

#[test]
fn printed_settings_hold_no_secret() {
    let file = SettingsFile::new(
        "secrets",
        r#"
            admin_token = "admin-token-in-the-file"
            redis_url = "redis://default:redis-password@127.0.0.1:6379"
            kafka_properties = ["sasl.password=kafka-password", "sasl.username=relay"]
        "#,
    );
    let out = coupon_http(
        &["--config", file.0.to_str().unwrap(), "--print-config"],
        &[(
            "COUPON_JWT_SECRET",
            "a-jwt-secret-of-at-least-32-bytes-long",
        )],
    );
    let printed = stdout(&out);
    for secret in [
        "admin-token-in-the-file",
        "redis-password",
        "kafka-password",
        "a-jwt-secret",
    ] {
        assert!(!printed.contains(secret), "{secret} printed:\n{printed}");
    }
    assert_eq!(
        line(&printed, "admin_token"),
        r#"admin_token = "<redacted>"  # settings file"#
    );
    assert_eq!(
        line(&printed, "jwt_secret"),
        r#"jwt_secret = "<redacted>"  # environment"#
    );
    assert!(
        printed.contains("redis://default:<redacted>@127.0.0.1:6379"),
        "{printed}"
    );
    assert!(printed.contains("sasl.username=relay"), "{printed}");
}

/// A file of this test's own holding `text`, as an orchestrator hands a secret over; removed when
/// dropped.
fn secret_file(name: &str, text: &str) -> SettingsFile {
    SettingsFile::new(&format!("secret-{name}"), text)
}

#[test]
fn a_secret_may_come_from_a_file_named_by_the_environment_or_the_settings_file() {
    let url = secret_file("url", "redis://relay:url-password@127.0.0.1:6390\n");
    let properties = secret_file(
        "properties",
        "security.protocol=SASL_SSL\nsasl.password=kafka-password\n\n",
    );
    let token = secret_file("token", "admin-token-from-a-file\r\n");
    let nodes = secret_file("nodes", "10.0.0.1:7000\n10.0.0.2:7000\n");
    let out = coupon_http(
        &["--print-config"],
        &[
            ("REDIS_URL_FILE", url.0.to_str().unwrap()),
            (
                "COUPON_KAFKA_PROPERTIES_FILE",
                properties.0.to_str().unwrap(),
            ),
            ("COUPON_ADMIN_TOKEN_FILE", token.0.to_str().unwrap()),
            ("REDIS_CLUSTER_NODES_FILE", nodes.0.to_str().unwrap()),
        ],
    );
    let printed = stdout(&out);
    assert_eq!(
        line(&printed, "redis_url"),
        r#"redis_url = "redis://relay:<redacted>@127.0.0.1:6390"  # environment (REDIS_URL_FILE)"#
    );
    assert_eq!(
        line(&printed, "kafka_properties"),
        r#"kafka_properties = ["security.protocol=SASL_SSL", "sasl.password=<redacted>"]  # environment (COUPON_KAFKA_PROPERTIES_FILE)"#
    );
    assert_eq!(
        line(&printed, "admin_token"),
        r#"admin_token = "<redacted>"  # environment (COUPON_ADMIN_TOKEN_FILE)"#
    );
    assert_eq!(
        line(&printed, "redis_cluster_nodes"),
        r#"redis_cluster_nodes = ["10.0.0.1:7000", "10.0.0.2:7000"]  # environment (REDIS_CLUSTER_NODES_FILE)"#
    );
    for secret in ["url-password", "kafka-password", "admin-token-from-a-file"] {
        assert!(!printed.contains(secret), "{secret} printed:\n{printed}");
    }

    // In the settings file, `<key>_file`, relative to the settings file's folder; the
    // environment's file still beats the settings file, and a flag beats both.
    let name = url.0.file_name().unwrap().to_str().unwrap();
    let file = SettingsFile::new("secret-keys", &format!("redis_url_file = {name:?}\n"));
    let config = file.0.to_str().unwrap();
    let printed = stdout(&coupon_http(&["--config", config, "--print-config"], &[]));
    assert_eq!(
        line(&printed, "redis_url"),
        r#"redis_url = "redis://relay:<redacted>@127.0.0.1:6390"  # settings file"#
    );
    let other = secret_file("other-url", "redis://127.0.0.1:6391");
    let printed = stdout(&coupon_http(
        &["--config", config, "--print-config"],
        &[("REDIS_URL_FILE", other.0.to_str().unwrap())],
    ));
    assert_eq!(
        line(&printed, "redis_url"),
        r#"redis_url = "redis://127.0.0.1:6391"  # environment (REDIS_URL_FILE)"#
    );
    let printed = stdout(&coupon_http(
        &[
            "--config",
            config,
            "--redis-url",
            "redis://127.0.0.1:6392",
            "--print-config",
        ],
        &[("REDIS_URL_FILE", other.0.to_str().unwrap())],
    ));
    assert_eq!(
        line(&printed, "redis_url"),
        r#"redis_url = "redis://127.0.0.1:6392"  # flag"#
    );
}

#[test]
fn a_secret_given_twice_or_from_a_missing_file_stops_the_start_naming_both() {
    let url = secret_file("twice", "redis://127.0.0.1:6390");
    let path = url.0.to_str().unwrap();
    let refused = |out: Output, names: &[&str]| {
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        for name in names {
            assert!(stderr.contains(name), "{name} not named: {stderr}");
        }
    };
    refused(
        coupon_http(
            &["--print-config"],
            &[
                ("REDIS_URL", "redis://127.0.0.1:6379"),
                ("REDIS_URL_FILE", path),
            ],
        ),
        &["REDIS_URL and REDIS_URL_FILE"],
    );
    let both = SettingsFile::new(
        "secret-twice",
        &format!("redis_url = \"redis://127.0.0.1:6379\"\nredis_url_file = {path:?}\n"),
    );
    refused(
        coupon_http(
            &["--config", both.0.to_str().unwrap(), "--print-config"],
            &[],
        ),
        &["`redis_url`", "`redis_url_file`"],
    );
    refused(
        coupon_http(
            &["--print-config"],
            &[("COUPON_JWT_SECRET_FILE", "/nonexistent/jwt-secret")],
        ),
        &["COUPON_JWT_SECRET_FILE", "/nonexistent/jwt-secret"],
    );
    // Only a secret's setting may come from a file.
    let not_secret = SettingsFile::new("not-secret", &format!("topic_file = {path:?}\n"));
    refused(
        coupon_http(
            &["--config", not_secret.0.to_str().unwrap(), "--print-config"],
            &[],
        ),
        &["unknown setting `topic_file`"],
    );
}
