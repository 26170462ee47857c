//! Reading a JSON request body without trusting it: media type, size, shape, duplicates.
//!
//! The size is checked from `Content-Length` before anything is read, and again while reading
//! (a chunked body has no length), so no request can make the server buffer more than
//! [`MAX_BODY`] bytes.

use http_body_util::{BodyExt, Limited};
use hyper::StatusCode;
use hyper::body::Incoming;
use hyper::header::{CONTENT_LENGTH, CONTENT_TYPE, HeaderMap};
use hyper::http::request::Parts;
use serde::de::DeserializeOwned;

use crate::response::Rejection;

/// The largest request body accepted, in bytes.
pub(crate) const MAX_BODY: usize = 4 * 1024;

/// Reads a request's body as a JSON object into `T`; `head` is the rest of the request.
///
/// `T` is a struct deriving `Deserialize`, which refuses a key given twice (`duplicate field`),
/// where a map would silently keep the last one.
pub(crate) async fn read_json<T: DeserializeOwned>(
    head: &Parts,
    body: Incoming,
) -> Result<T, Rejection> {
    check_content_type(&head.headers)?;
    parse(&collect(head, body).await?)
}

/// As [`read_json`], but a request without a body (none, or only whitespace) reads as
/// `T::default()`, whatever its content type.
pub(crate) async fn read_optional_json<T: DeserializeOwned + Default>(
    head: &Parts,
    body: Incoming,
) -> Result<T, Rejection> {
    let bytes = collect(head, body).await?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    check_content_type(&head.headers)?;
    parse(&bytes)
}

/// The body, at most [`MAX_BODY`] bytes of it.
async fn collect(head: &Parts, body: Incoming) -> Result<bytes::Bytes, Rejection> {
    let declared = head
        .headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|len| len > MAX_BODY as u64) {
        return Err(too_large());
    }
    match Limited::new(body, MAX_BODY).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(err)
            if err
                .downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            Err(too_large())
        }
        Err(err) => Err(Rejection::bad_request(format!(
            "could not read the request body: {err}"
        ))),
    }
}

fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Rejection> {
    match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
        None => Err(Rejection::bad_request(
            "the request body is empty; send a JSON object",
        )),
        // A derived struct would also accept a JSON array of its fields, which no client means.
        Some(b'{') => serde_json::from_slice(bytes).map_err(|err| {
            Rejection::bad_request(format!(
                "the request body is not valid JSON for this endpoint: {err}"
            ))
        }),
        Some(_) => Err(Rejection::bad_request(
            "the request body must be a JSON object",
        )),
    }
}

fn check_content_type(headers: &HeaderMap) -> Result<(), Rejection> {
    let media_type = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or_default().trim());
    match media_type {
        Some(t) if t.eq_ignore_ascii_case("application/json") => Ok(()),
        Some(other) => Err(Rejection::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!(
                "content type {:?} is not accepted; send application/json",
                other.to_ascii_lowercase()
            ),
        )),
        None => Err(Rejection::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Content-Type is missing; send application/json",
        )),
    }
}

fn too_large() -> Rejection {
    Rejection::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("the request body is larger than {MAX_BODY} bytes"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug)]
    struct Probe {
        #[serde(rename = "userId")]
        _user_id: Option<serde_json::Value>,
    }

    fn message(bytes: &str) -> String {
        format!("{:?}", parse::<Probe>(bytes.as_bytes()).unwrap_err())
    }

    #[test]
    fn shapes_that_are_not_one_json_object_are_refused() {
        assert!(message("").contains("empty"));
        assert!(message("  \n").contains("empty"));
        assert!(message("[1]").contains("JSON object"));
        assert!(message("1").contains("JSON object"));
        assert!(message("\"x\"").contains("JSON object"));
        assert!(message("{").contains("not valid JSON"));
        assert!(message(r#"{"userId":1,"userId":2}"#).contains("duplicate field"));
        assert!(message(r#"{"userId":1} {}"#).contains("trailing characters"));
        assert!(parse::<Probe>(br#" {"userId": 1, "other": true} "#).is_ok());
    }
}
