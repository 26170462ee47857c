//! Identifiers as requests carry them: percent-encoded in the path, or JSON in the body.

use coupon_gate::{CampaignId, UserId};
use serde_json::Value;

use crate::response::Rejection;

pub(super) fn campaign_id(id: &str) -> Result<CampaignId, Rejection> {
    CampaignId::new(path_segment(id)?).map_err(|err| Rejection::bad_request(err.to_string()))
}

/// A path segment as its sender meant it: percent-decoded (RFC 3986 §2.1), so that a user id
/// with `:` or `|` arrives the same whether or not the client encoded those.
pub(super) fn path_segment(segment: &str) -> Result<std::borrow::Cow<'_, str>, Rejection> {
    percent_encoding::percent_decode_str(segment)
        .decode_utf8()
        .map_err(|_| Rejection::bad_request("a path segment is not percent-encoded UTF-8"))
}

pub(super) fn user_id_from_json(value: Option<Value>) -> Result<UserId, Rejection> {
    let value = value.ok_or_else(|| {
        Rejection::bad_request("userId is required: a positive integer or an id string")
    })?;
    // `as_u64` is `None` for negative numbers, fractions (even 1.0) and numbers beyond u64.
    let user = match &value {
        Value::Number(n) => n.as_u64().and_then(|n| UserId::from_number(n).ok()),
        Value::String(text) => UserId::new(text.as_str()).ok(),
        _ => None,
    };
    user.ok_or_else(|| {
        Rejection::bad_request(format!(
            "userId must be an integer from 1 to {} or 1 to 64 characters from A-Z, a-z, 0-9 and . _ : @ | -, got {value}",
            UserId::MAX_NUMBER
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_ids_from_json_are_positive_i64_integers_or_id_strings() {
        let parse = |text: &str| user_id_from_json(Some(serde_json::from_str(text).unwrap()));
        assert_eq!(parse("1").unwrap().as_str(), "1");
        assert_eq!(
            parse("9223372036854775807").unwrap().as_number(),
            Some(i64::MAX as u64)
        );
        assert_eq!(parse(r#""42""#).unwrap(), parse("42").unwrap());
        assert_eq!(parse(r#""auth0|5f3a9c""#).unwrap().as_str(), "auth0|5f3a9c");
        let longest = format!("\"{}\"", "x".repeat(64));
        assert!(parse(&longest).is_ok());
        let too_long = format!("\"{}\"", "x".repeat(65));
        for bad in [
            "0",
            "-1",
            "1.0",
            "1.5",
            "9223372036854775808",
            "18446744073709551616",
            r#""""#,
            r#""0""#,
            r#""-1""#,
            r#""1.5""#,
            r#""a b""#,
            r#""쿠폰""#,
            &too_long,
            "true",
            "null",
            "[1]",
            "{}",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        assert!(user_id_from_json(None).is_err());
    }
}
