//! Who is calling: the bearer token's user (verified, within the client address's budget of
//! bad tokens), the admin token, and the 429 of a limit.

use std::net::IpAddr;

use coupon_gate::UserId;
use hyper::StatusCode;
use hyper::header::AUTHORIZATION;
use hyper::http::request::Parts;

use crate::identity::{Unauthenticated, Verifier};
use crate::limits::{Limit, Limited};
use crate::response::Rejection;
use crate::state::AppState;
use crate::telemetry::Verification;

/// The admin endpoints' check: the admin token, compared in constant time.
pub(super) fn authorize(state: &AppState, head: &Parts) -> Result<(), Rejection> {
    let Some(expected) = state.admin_token() else {
        return Err(Rejection::new(
            StatusCode::FORBIDDEN,
            "admin endpoints are disabled: no COUPON_ADMIN_TOKEN is configured",
        ));
    };
    let given = bearer(head).map_err(|_| {
        Rejection::new(
            StatusCode::UNAUTHORIZED,
            "send the admin token as Authorization: Bearer <token>",
        )
        .with_header("www-authenticate", "Bearer")
    })?;
    if !same_secret(given.as_bytes(), expected.as_bytes()) {
        return Err(Rejection::new(
            StatusCode::FORBIDDEN,
            "the admin token is wrong",
        ));
    }
    Ok(())
}

/// The credentials of `Authorization: Bearer <credentials>`; the scheme's case does not matter
/// (RFC 7235).
fn bearer(head: &Parts) -> Result<&str, Unauthenticated> {
    let value = head
        .headers
        .get(AUTHORIZATION)
        .ok_or_else(|| Unauthenticated("send a token as Authorization: Bearer <token>".into()))?;
    let value = value
        .to_str()
        .map_err(|_| Unauthenticated("the Authorization header is not text".into()))?;
    match value.trim().split_once(' ') {
        Some((scheme, credentials))
            if scheme.eq_ignore_ascii_case("bearer") && !credentials.trim().is_empty() =>
        {
            Ok(credentials.trim())
        }
        _ => Err(Unauthenticated(
            "the Authorization header must be Bearer <token>".into(),
        )),
    }
}

/// The user of the request's bearer token, or 401 saying why there is none. A token verified
/// before passes at once; any other is verified only while `client` has not spent its budget
/// of failed verifications (429 otherwise), and spends it when refused.
pub(super) async fn token_user(
    state: &AppState,
    verifier: &Verifier,
    client: IpAddr,
    head: &Parts,
) -> Result<UserId, Rejection> {
    let token = bearer(head).map_err(|Unauthenticated(why)| Rejection::unauthorized(why, false))?;
    let unknown = match verifier.remembered(token) {
        Ok(user) => return Ok(user),
        Err(unknown) => unknown,
    };
    let telemetry = state.telemetry();
    if let Err(refused) = state.limits().check_bad_tokens(client) {
        telemetry.token(Verification::Skipped);
        return Err(limited(refused));
    }
    match verifier.verify(token, unknown) {
        Ok(user) => {
            telemetry.token(Verification::Valid);
            Ok(user)
        }
        Err(Unauthenticated(why)) => {
            telemetry.token(Verification::Invalid);
            state.limits().spend_bad_token(client).await;
            Err(Rejection::unauthorized(why, true))
        }
    }
}

/// 429 for an application over a limit.
pub(super) fn limited(limited: Limited) -> Rejection {
    let what = match limited.limit {
        Limit::User => "too many applications from this user",
        Limit::Address => "too many applications from this client address",
        Limit::BadTokens => "too many invalid tokens from this client address",
    };
    Rejection::rate_limited(
        format!("{what}; retry after the time in Retry-After"),
        limited.retry_after,
    )
}

/// Compares two secrets in time that depends on neither their content nor their lengths: both
/// are hashed, and the digests compared in constant time.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    use sha2::{Digest, Sha256};
    use subtle::ConstantTimeEq;
    Sha256::digest(a).ct_eq(&Sha256::digest(b)).into()
}

#[cfg(test)]
mod tests {
    use hyper::Request;

    use super::*;

    #[test]
    fn secret_comparison() {
        assert!(same_secret(b"secret", b"secret"));
        assert!(!same_secret(b"secret", b"secreT"));
        assert!(!same_secret(b"secret", b"secret2"));
        assert!(!same_secret(b"", b"secret"));
    }

    #[test]
    fn bearer_schemes_are_case_insensitive() {
        let head = |value: &str| {
            Request::builder()
                .header(AUTHORIZATION, value)
                .body(())
                .unwrap()
                .into_parts()
                .0
        };
        for ok in ["Bearer abc", "bearer abc", "BEARER  abc ", "bEaReR abc"] {
            assert_eq!(bearer(&head(ok)).ok(), Some("abc"), "{ok:?}");
        }
        for bad in ["Basic abc", "Bearer", "Bearer ", "abc", "Token abc"] {
            assert!(bearer(&head(bad)).is_err(), "{bad:?}");
        }
    }
}
