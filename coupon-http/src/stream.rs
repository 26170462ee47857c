//! The TCP stream as the server reads and writes it: it tells the connection's watchdog when
//! bytes arrive, and turns hyper's own answers to requests it could not parse into JSON.
//!
//! hyper answers a request head it cannot parse (400), one too large (431) or with a target too
//! long (414) itself, before any handler runs, with an empty body and `content-length: 0`. Every
//! answer of this server is documented as JSON with a `status`, and every answer the handlers
//! write has a JSON body, so a 4xx head with `content-length: 0` can only be hyper's: the stream
//! writes a JSON answer with the same status in its place. hyper closes the connection after it.
//!
//! A connection that opens with HTTP/2's preface, which hyper's HTTP/1.1 server would close
//! without a word, is answered in HTTP/2's own frames (GOAWAY with `HTTP_1_1_REQUIRED`, the JSON
//! error as its debug data), and its stream ends there.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::watchdog::Watchdog;

/// A connection's socket.
pub(crate) struct Stream {
    inner: TcpStream,
    watchdog: Arc<Watchdog>,
    /// hyper's error answer being replaced: the JSON answer, how much of it is written, and the
    /// length of hyper's answer, reported to hyper once ours is written.
    replacing: Option<(Vec<u8>, usize, usize)>,
    /// The most bytes of a request head accepted, named in the 431 answer.
    max_head: usize,
    /// Whether nothing has been read yet: the first bytes tell an HTTP/2 preface.
    fresh: bool,
    /// The answer to an HTTP/2 preface and how much of it is written; hyper reads the end of
    /// the stream once it is out.
    refusing: Option<(Vec<u8>, usize)>,
}

/// How an HTTP/2 connection begins, with prior knowledge (RFC 9113 §3.4): hyper's HTTP/1.1 server
/// would close it without a word.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n";

/// The error in an HTTP/2 refusal's GOAWAY: `HTTP_1_1_REQUIRED` (RFC 9113 §7).
const HTTP_1_1_REQUIRED: u32 = 0xd;

/// The answer to an HTTP/2 preface, in HTTP/2's own frames, since an HTTP/2 client reads no
/// HTTP/1.1 answer: the server's preface (an empty SETTINGS frame), then GOAWAY with
/// `HTTP_1_1_REQUIRED`, whose debug data is this server's JSON error.
fn http2_refusal() -> Vec<u8> {
    let debug = br#"{"message":"this server speaks HTTP/1.1, not HTTP/2","status":"error"}"#;
    let length = u32::try_from(8 + debug.len()).expect("a short frame");
    let mut frames = vec![0, 0, 0, 0x4, 0, 0, 0, 0, 0];
    frames.extend_from_slice(&length.to_be_bytes()[1..]);
    frames.extend_from_slice(&[0x7, 0, 0, 0, 0, 0]);
    frames.extend_from_slice(&0u32.to_be_bytes());
    frames.extend_from_slice(&HTTP_1_1_REQUIRED.to_be_bytes());
    frames.extend_from_slice(debug);
    frames
}

impl Stream {
    pub(crate) fn new(inner: TcpStream, watchdog: Arc<Watchdog>, max_head: usize) -> Self {
        Self {
            inner,
            watchdog,
            replacing: None,
            max_head,
            fresh: true,
            refusing: None,
        }
    }

    /// Writes what is left of the answer to an HTTP/2 preface; ready when all of it is out.
    fn refuse(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let Some((answer, written)) = self.refusing.as_mut() else {
            return Poll::Ready(Ok(()));
        };
        while *written < answer.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &answer[*written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            *written += n;
        }
        Poll::Ready(Ok(()))
    }

    fn write_through(
        &mut self,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if self.replacing.is_none() {
            match bufs
                .first()
                .and_then(|head| json_answer(head, self.max_head))
            {
                Some(answer) => {
                    let reported = bufs.iter().map(|b| b.len()).sum();
                    self.replacing = Some((answer, 0, reported));
                }
                None => return Pin::new(&mut self.inner).poll_write_vectored(cx, bufs),
            }
        }
        let (answer, written, reported) = self.replacing.as_mut().expect("set above");
        while *written < answer.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &answer[*written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            *written += n;
        }
        // Whatever hyper writes after its error answer goes nowhere: it is closing.
        let done = *reported;
        *reported = bufs.iter().map(|b| b.len()).sum();
        Poll::Ready(Ok(done))
    }
}

/// The JSON answer that replaces `head`, when `head` is hyper's own bodiless 4xx answer.
fn json_answer(head: &[u8], max_head: usize) -> Option<Vec<u8>> {
    // Only the codes hyper answers itself; every other answer (a sold-out 410, say: the hottest
    // path) is passed on after this comparison of a few bytes.
    let code = match head.get(..12)? {
        b"HTTP/1.1 400" => "00",
        b"HTTP/1.1 414" => "14",
        b"HTTP/1.1 431" => "31",
        _ => return None,
    };
    // The head up to and with the line end of its last header.
    let end = head.windows(4).position(|w| w == b"\r\n\r\n")? + 2;
    let bodiless = head[..end]
        .windows(21)
        .any(|w| w.eq_ignore_ascii_case(b"\r\ncontent-length: 0\r\n"));
    if !bodiless {
        return None;
    }
    let (reason, message) = match code {
        "31" => (
            "Request Header Fields Too Large",
            format!("the request head is larger than the {max_head} bytes this server accepts"),
        ),
        "14" => ("URI Too Long", "the request target is too long".to_owned()),
        _ => (
            "Bad Request",
            "the request is not valid HTTP/1.1".to_owned(),
        ),
    };
    let body = serde_json::json!({ "status": "error", "message": message }).to_string();
    Some(
        format!(
            "HTTP/1.1 4{code} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
        .into_bytes(),
    )
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.refusing.is_some() {
            // Nothing more for hyper: once the answer is out, the stream ends.
            return this.refuse(cx);
        }
        let before = buf.filled().len();
        let poll = Pin::new(&mut this.inner).poll_read(cx, buf);
        if matches!(poll, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.watchdog.received();
            if std::mem::take(&mut this.fresh) && buf.filled()[before..].starts_with(H2_PREFACE) {
                buf.set_filled(before);
                this.refusing = Some((http2_refusal(), 0));
                return this.refuse(cx);
            }
        }
        poll
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().write_through(cx, &[IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().write_through(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_hypers_bodiless_4xx_answers_are_replaced() {
        let hyper_431 = b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\ndate: Fri, 27 Nov 2026 10:00:00 GMT\r\n\r\n";
        let answer = String::from_utf8(json_answer(hyper_431, 8192).unwrap()).unwrap();
        assert!(answer.starts_with("HTTP/1.1 431 "), "{answer}");
        let body = answer.split("\r\n\r\n").nth(1).unwrap();
        let value: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(value["status"], "error");
        assert!(value["message"].as_str().unwrap().contains("8192"));
        assert!(answer.contains(&format!("content-length: {}\r\n", body.len())));

        let hyper_400 = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n";
        let hyper_414 = b"HTTP/1.1 414 URI Too Long\r\nContent-Length: 0\r\ndate: x\r\n\r\n";
        assert!(json_answer(hyper_414, 8192).is_some_and(|a| a.starts_with(b"HTTP/1.1 414 ")));
        assert!(json_answer(hyper_400, 8192).is_some());
        // The handlers' own answers all have a body.
        let ours = b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: 51\r\n\r\n";
        assert!(json_answer(ours, 8192).is_none());
        let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";
        assert!(json_answer(ok, 8192).is_none());
        let gone = b"HTTP/1.1 410 Gone\r\ncontent-length: 0\r\n\r\n";
        assert!(json_answer(gone, 8192).is_none());
        let content_length_10 = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 01\r\n\r\n";
        assert!(json_answer(content_length_10, 8192).is_none());
    }

    #[test]
    fn the_http2_refusal_is_settings_then_goaway_with_a_json_error() {
        let frames = http2_refusal();
        // SETTINGS: empty, on stream 0.
        assert_eq!(frames[..9], [0, 0, 0, 0x4, 0, 0, 0, 0, 0]);
        let goaway = &frames[9..];
        let length = u32::from_be_bytes([0, goaway[0], goaway[1], goaway[2]]) as usize;
        assert_eq!((goaway[3], &goaway[5..9]), (0x7, &[0, 0, 0, 0][..]));
        assert_eq!(goaway.len(), 9 + length);
        let payload = &goaway[9..];
        assert_eq!(payload[4..8], 0xdu32.to_be_bytes(), "HTTP_1_1_REQUIRED");
        let value: serde_json::Value = serde_json::from_slice(&payload[8..]).unwrap();
        assert_eq!(value["status"], "error");
    }
}
