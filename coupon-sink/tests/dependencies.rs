//! The sink reads the topic and writes MySQL: its build links no Redis client, and none of the
//! gate's or the relay's code, only the wire contract (coupon-event).

use std::process::Command;

#[test]
fn the_sink_links_no_redis_client_nor_the_gate() {
    let out = Command::new(env!("CARGO"))
        .args([
            "tree",
            "--locked",
            "-p",
            "coupon-sink",
            "-e",
            "normal",
            "--prefix",
            "none",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo tree runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tree = String::from_utf8(out.stdout).expect("cargo tree prints text");
    let crates: Vec<&str> = tree
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert!(crates.contains(&"coupon-event"), "{tree}");
    for unwanted in ["redis", "coupon-gate", "coupon-relay"] {
        assert!(
            !crates.contains(&unwanted),
            "coupon-sink depends on {unwanted}:\n{tree}"
        );
    }
}
