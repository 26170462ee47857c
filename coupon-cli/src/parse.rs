//! Parsers for values the binaries take from flags, the environment and the settings file.

/// Parses a librdkafka property given as `key=value`, as the binaries take them from
/// `COUPON_KAFKA_PROPERTIES` and `--kafka-properties`.
///
/// # Errors
///
/// No `=`, or an empty key.
pub fn kafka_property(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.trim().is_empty() => {
            Ok((key.trim().to_owned(), value.trim().to_owned()))
        }
        _ => Err(format!("{text:?} is not key=value")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn properties_are_key_value() {
        assert_eq!(
            kafka_property(" security.protocol = SASL_SSL "),
            Ok(("security.protocol".to_owned(), "SASL_SSL".to_owned()))
        );
        assert_eq!(
            kafka_property("sasl.password=a=b"),
            Ok(("sasl.password".to_owned(), "a=b".to_owned()))
        );
        for bad in ["", "novalue", "=value", " =x"] {
            assert!(kafka_property(bad).is_err(), "{bad:?}");
        }
    }
}
