//! The few calls around a sale: wait until a `coupon-http` is ready, create a campaign, read
//! its quota, look up and take back a user's coupon.

use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{AUTHORIZATION, CONTENT_TYPE};
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};

/// A `coupon-http` server, by base URL.
#[derive(Clone)]
pub struct Server {
    base: String,
    client: Client<HttpConnector, Full<Bytes>>,
}

impl Server {
    /// A server at `base`, such as `http://127.0.0.1:8080`.
    ///
    /// # Errors
    ///
    /// `base` is not an `http://` URL.
    pub fn new(base: &str) -> anyhow::Result<Self> {
        let base = base.trim_end_matches('/').to_owned();
        let uri: hyper::Uri = base.parse().with_context(|| format!("bad URL {base:?}"))?;
        anyhow::ensure!(
            uri.scheme_str() == Some("http") && uri.host().is_some(),
            "expected http://host[:port], not {base:?}"
        );
        Ok(Self {
            base,
            client: Client::builder(TokioExecutor::new()).build_http(),
        })
    }

    /// Waits until `GET /ready` answers 200: Redis reachable, so admissions are taken (the relay
    /// may still be waiting for the broker; admissions then wait in the outbox).
    ///
    /// # Errors
    ///
    /// Not ready within `limit`; the error carries the last answer or failure.
    pub async fn wait_ready(&self, limit: Duration) -> anyhow::Result<()> {
        let started = Instant::now();
        loop {
            let last = match self.call(Method::GET, "/ready", None, None).await {
                Ok((StatusCode::OK, _)) => return Ok(()),
                Ok((code, body)) => format!("{code} {body}"),
                Err(err) => format!("{err:#}"),
            };
            if started.elapsed() >= limit {
                anyhow::bail!("{} not ready within {limit:?}: {last}", self.base);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Creates campaign `id` with `quota` coupons, open now and without end; an existing one
    /// with the same quota is fine.
    ///
    /// # Errors
    ///
    /// The server refused (a wrong token, a quota below what is already issued) or failed.
    pub async fn create_campaign(
        &self,
        id: &str,
        quota: u32,
        token: Option<&str>,
    ) -> anyhow::Result<()> {
        self.create(json!({ "id": id, "quota": quota }), token)
            .await
    }

    /// Creates campaign `id` with `quota` coupons opening with a draw: its pre-queue open from
    /// `queue_opens_at`, the draw at `opens_at` (RFC 3339 times).
    ///
    /// # Errors
    ///
    /// The server refused (a wrong token, bad times, an opening it cannot change any more) or
    /// failed.
    pub async fn create_draw(
        &self,
        id: &str,
        quota: u32,
        (queue_opens_at, opens_at): (&str, &str),
        token: Option<&str>,
    ) -> anyhow::Result<()> {
        let body = json!({ "id": id, "quota": quota, "opening": "draw",
                           "queueOpensAt": queue_opens_at, "opensAt": opens_at });
        self.create(body, token).await
    }

    /// `POST /api/campaigns` with `definition`: created (201), or there already (200).
    async fn create(&self, definition: Value, token: Option<&str>) -> anyhow::Result<()> {
        let id = definition["id"].clone();
        let (code, answer) = self
            .call(Method::POST, "/api/campaigns", Some(definition), token)
            .await?;
        anyhow::ensure!(
            code == StatusCode::CREATED || code == StatusCode::OK,
            "creating campaign {id}: {code} {answer}"
        );
        Ok(())
    }

    /// Campaign `id` as `GET /api/campaigns/{id}` answers it.
    ///
    /// # Errors
    ///
    /// No such campaign, or the server failed.
    pub async fn campaign(&self, id: &str) -> anyhow::Result<Value> {
        let (code, answer) = self
            .call(Method::GET, &format!("/api/campaigns/{id}"), None, None)
            .await?;
        anyhow::ensure!(code == StatusCode::OK, "campaign {id}: {code} {answer}");
        Ok(answer)
    }

    /// The quota of campaign `id`.
    ///
    /// # Errors
    ///
    /// No such campaign, or the server failed.
    pub async fn quota(&self, id: &str) -> anyhow::Result<u64> {
        let answer = self.campaign(id).await?;
        answer["quota"]
            .as_u64()
            .with_context(|| format!("campaign {id}: no quota in {answer}"))
    }

    /// The seq `user` holds in campaign `id`, if any: the definitive answer for a user whose
    /// application got no decision. `token` is the admin token, which a server that verifies
    /// tokens asks for.
    ///
    /// # Errors
    ///
    /// No such campaign, a refused token, or the server failed.
    pub async fn admission(
        &self,
        id: &str,
        user: u64,
        token: Option<&str>,
    ) -> anyhow::Result<Option<u64>> {
        let (code, answer) = self
            .call(
                Method::GET,
                &format!("/api/campaigns/{id}/users/{user}"),
                None,
                token,
            )
            .await?;
        anyhow::ensure!(
            code == StatusCode::OK,
            "user {user} of {id}: {code} {answer}"
        );
        Ok(answer["seq"].as_u64())
    }

    /// Takes `user`'s coupon of campaign `id` back (`DELETE /api/campaigns/{id}/users/{user}`,
    /// an admin call): the seq it held, or `None` when the user held none (nothing changed).
    ///
    /// # Errors
    ///
    /// No such campaign, a refused token, or the server failed.
    pub async fn release(
        &self,
        id: &str,
        user: u64,
        token: Option<&str>,
    ) -> anyhow::Result<Option<u64>> {
        let (code, answer) = self
            .call(
                Method::DELETE,
                &format!("/api/campaigns/{id}/users/{user}"),
                None,
                token,
            )
            .await?;
        match (code, answer["status"].as_str()) {
            (StatusCode::OK, Some("released")) => Ok(answer["seq"].as_u64()),
            (StatusCode::NOT_FOUND, Some("not_a_holder")) => Ok(None),
            _ => anyhow::bail!("releasing user {user} of {id}: {code} {answer}"),
        }
    }

    /// Ends campaign `id` now (`POST /api/campaigns/{id}/close`, an admin call).
    ///
    /// # Errors
    ///
    /// No such campaign, a refused token, or the server failed.
    pub async fn close(&self, id: &str, token: Option<&str>) -> anyhow::Result<()> {
        let path = format!("/api/campaigns/{id}/close");
        let (code, answer) = self.call(Method::POST, &path, None, token).await?;
        anyhow::ensure!(code == StatusCode::OK, "closing {id}: {code} {answer}");
        Ok(())
    }

    /// Asks to archive campaign `id` (`POST /api/campaigns/{id}/archive`, an admin call): the
    /// status and the answer, whatever they are (200 `archived`, 409 `not_settled`, ...).
    ///
    /// # Errors
    ///
    /// The server could not be reached.
    pub async fn archive(
        &self,
        id: &str,
        token: Option<&str>,
    ) -> anyhow::Result<(StatusCode, Value)> {
        let path = format!("/api/campaigns/{id}/archive");
        self.call(Method::POST, &path, None, token).await
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        token: Option<&str>,
    ) -> anyhow::Result<(StatusCode, Value)> {
        let mut request = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base));
        if body.is_some() {
            request = request.header(CONTENT_TYPE, "application/json");
        }
        if let Some(token) = token {
            request = request.header(AUTHORIZATION, format!("Bearer {token}"));
        }
        let body = body.map_or_else(Bytes::new, |b| Bytes::from(b.to_string()));
        let response = self
            .client
            .request(request.body(Full::new(body))?)
            .await
            .with_context(|| format!("{}{path}", self.base))?;
        let code = response.status();
        let bytes = response.into_body().collect().await?.to_bytes();
        let value = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        Ok((code, value))
    }
}
