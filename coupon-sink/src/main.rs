//! `coupon-sink`: the consumer that writes admissions from Kafka into MySQL.
//!
//! Not built yet: it follows the HTTP server. Until then the binary says so and exits with
//! status 2, so that nothing mistakes it for a running consumer.

fn main() -> std::process::ExitCode {
    eprintln!("coupon-sink: the Kafka to MySQL consumer is not built yet");
    std::process::ExitCode::from(2)
}
