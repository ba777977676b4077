//! The metrics listener's HTTP: a request head parsed by `httparse` from a
//! bounded buffer, routed by a pure function, answered, and the connection
//! kept for more requests or closed.
//!
//! Bounds: the request head is at most [`MAX_HEAD`] bytes (431 beyond) with
//! at most [`MAX_HEADERS`] fields; it must be complete within
//! `metrics.header-timeout` of the wait's start (408 when some bytes came,
//! a silent close when none did); a response must be taken within
//! [`WRITE_TIMEOUT`]; a connection serves at most [`MAX_REQUESTS`]
//! requests; no request may have a body (413). Only `GET` and `HEAD` exist
//! (405 with `Allow`); paths are `/metrics`, `/status.json` and `/` (404).
//! Before the first snapshot every path answers 503 with `Retry-After`.
#![forbid(unsafe_code)]

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Largest request head.
pub const MAX_HEAD: usize = 8 * 1024;
/// Most header fields.
pub const MAX_HEADERS: usize = 64;
/// Requests on one connection.
pub const MAX_REQUESTS: u32 = 100;
/// Time a client has to take a response.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// After an error answer, what the client still sends is read and dropped
/// for this long (at most [`LINGER_BYTES`]), so that the close does not
/// turn into a reset that destroys the answer.
pub const LINGER: Duration = Duration::from_secs(1);
pub const LINGER_BYTES: usize = 64 * 1024;

/// A request head, as far as the routes care.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    /// The path without its query.
    pub path: String,
    pub accept: Option<String>,
    pub keep_alive: bool,
    /// Content-Length other than 0, or Transfer-Encoding.
    pub has_body: bool,
}

/// What the bytes so far are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// Not a complete head yet.
    Partial,
    /// A complete head of `len` bytes.
    Request(Request, usize),
    /// Not HTTP/1.x, or too many header fields.
    Bad(Status),
}

/// The statuses this server answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Ok,
    BadRequest,
    NotFound,
    MethodNotAllowed,
    Timeout,
    PayloadTooLarge,
    HeadersTooLarge,
    Unavailable,
}

impl Status {
    pub fn code(self) -> (u16, &'static str) {
        match self {
            Status::Ok => (200, "OK"),
            Status::BadRequest => (400, "Bad Request"),
            Status::NotFound => (404, "Not Found"),
            Status::MethodNotAllowed => (405, "Method Not Allowed"),
            Status::Timeout => (408, "Request Timeout"),
            Status::PayloadTooLarge => (413, "Payload Too Large"),
            Status::HeadersTooLarge => (431, "Request Header Fields Too Large"),
            Status::Unavailable => (503, "Service Unavailable"),
        }
    }
}

/// Parses what the buffer holds (pure).
pub fn parse(buf: &[u8]) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(httparse::Error::TooManyHeaders) => return Parsed::Bad(Status::HeadersTooLarge),
        Err(_) => return Parsed::Bad(Status::BadRequest),
    };
    let method = req.method.unwrap_or("").to_string();
    let target = req.path.unwrap_or("");
    let path = target.split(['?', '#']).next().unwrap_or("").to_string();
    let version = req.version.unwrap_or(0);
    let mut accept = None;
    let mut connection: Option<String> = None;
    let mut has_body = false;
    for h in req.headers.iter() {
        let value = String::from_utf8_lossy(h.value).trim().to_string();
        if h.name.eq_ignore_ascii_case("accept") {
            accept = Some(value);
        } else if h.name.eq_ignore_ascii_case("connection") {
            connection = Some(value.to_ascii_lowercase());
        } else if h.name.eq_ignore_ascii_case("content-length") {
            has_body |= value != "0";
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            has_body = true;
        }
    }
    let keep_alive = match (version, connection.as_deref()) {
        (_, Some(c)) if c.split(',').any(|t| t.trim() == "close") => false,
        (1, _) => true,
        (_, Some(c)) => c.split(',').any(|t| t.trim() == "keep-alive"),
        _ => false,
    };
    Parsed::Request(
        Request {
            method,
            path,
            accept,
            keep_alive,
            has_body,
        },
        len,
    )
}

/// A response to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: Status,
    pub content_type: &'static str,
    pub body: Vec<u8>,
    /// More header lines (`Name: value`).
    pub extra: Vec<String>,
    /// Close the connection after this response.
    pub close: bool,
}

impl Response {
    pub fn text(status: Status, body: &str) -> Response {
        Response {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.as_bytes().to_vec(),
            extra: Vec::new(),
            close: status != Status::Ok,
        }
    }

    /// The bytes on the wire (`head`: a HEAD request, no body).
    pub fn to_bytes(&self, head: bool) -> Vec<u8> {
        let (code, reason) = self.status.code();
        let mut out = format!(
            "HTTP/1.1 {code} {reason}\r\nContent-Type: {}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\n",
            self.content_type,
            self.body.len()
        );
        for e in &self.extra {
            out.push_str(e);
            out.push_str("\r\n");
        }
        if self.close {
            out.push_str("Connection: close\r\n");
        }
        out.push_str("\r\n");
        let mut bytes = out.into_bytes();
        if !head {
            bytes.extend_from_slice(&self.body);
        }
        bytes
    }
}

/// Which page a request names; errors for the rest (pure).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Metrics,
    Json,
    Page,
}

pub fn route(req: &Request) -> Result<Route, Response> {
    if req.method != "GET" && req.method != "HEAD" {
        let mut r = Response::text(
            Status::MethodNotAllowed,
            "only GET and HEAD: this is a read-only metrics and status listener\n",
        );
        r.extra.push("Allow: GET, HEAD".into());
        return Err(r);
    }
    if req.has_body {
        return Err(Response::text(
            Status::PayloadTooLarge,
            "requests to this listener have no body\n",
        ));
    }
    match req.path.as_str() {
        "/metrics" => Ok(Route::Metrics),
        "/status.json" => Ok(Route::Json),
        "/" | "/index.html" => Ok(Route::Page),
        _ => Err(Response::text(
            Status::NotFound,
            "not found: this listener serves /metrics, /status.json and / (the status page)\n",
        )),
    }
}

/// Why a connection ended early, for the caller's budgeted log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trouble {
    /// A request was answered with an error status.
    Answered(Status, String),
    /// The client did not take its response in time.
    WriteTimeout,
}

/// Serves one connection: requests until the client closes, asks to close,
/// errs, or reaches [`MAX_REQUESTS`]. `answer` renders a routed request;
/// `written` is called when its response has been written. Returns what
/// went wrong, if anything (for the log).
pub async fn serve<S, F, W>(
    mut stream: S,
    header_timeout: Duration,
    mut answer: F,
    mut written: W,
) -> Option<Trouble>
where
    S: AsyncRead + AsyncWrite + Unpin,
    F: FnMut(Route, &Request) -> Response,
    W: FnMut(),
{
    let mut buf = vec![0u8; MAX_HEAD];
    let mut len = 0usize;
    for _ in 0..MAX_REQUESTS {
        let deadline = tokio::time::Instant::now() + header_timeout;
        let (req, used) = loop {
            match parse(&buf[..len]) {
                Parsed::Request(r, n) => break (r, n),
                Parsed::Bad(status) => {
                    let r = Response::text(status, bad_text(status));
                    let _ = write(&mut stream, &r.to_bytes(false)).await;
                    linger(&mut stream).await;
                    return Some(Trouble::Answered(status, String::new()));
                }
                Parsed::Partial if len == buf.len() => {
                    let r =
                        Response::text(Status::HeadersTooLarge, "request head longer than 8 KiB\n");
                    let _ = write(&mut stream, &r.to_bytes(false)).await;
                    linger(&mut stream).await;
                    return Some(Trouble::Answered(Status::HeadersTooLarge, String::new()));
                }
                Parsed::Partial => {}
            }
            let n = match tokio::time::timeout_at(deadline, stream.read(&mut buf[len..])).await {
                Err(_) if len == 0 => return None,
                Err(_) => {
                    let r = Response::text(
                        Status::Timeout,
                        "request head not complete within metrics.header-timeout\n",
                    );
                    let _ = write(&mut stream, &r.to_bytes(false)).await;
                    return Some(Trouble::Answered(Status::Timeout, String::new()));
                }
                Ok(Ok(0)) | Ok(Err(_)) => return None,
                Ok(Ok(n)) => n,
            };
            len += n;
        };
        let head = req.method == "HEAD";
        let (response, trouble) = match route(&req) {
            Ok(r) => {
                let mut resp = answer(r, &req);
                resp.close |= !req.keep_alive;
                let t = (resp.status != Status::Ok)
                    .then(|| Trouble::Answered(resp.status, req.path.clone()));
                (resp, t)
            }
            Err(resp) => {
                let t = Trouble::Answered(resp.status, format!("{} {}", req.method, req.path));
                (resp, Some(t))
            }
        };
        if write(&mut stream, &response.to_bytes(head)).await.is_err() {
            return Some(Trouble::WriteTimeout);
        }
        written();
        if response.close {
            if trouble.is_some() {
                linger(&mut stream).await;
            } else {
                let _ = stream.shutdown().await;
            }
            return trouble;
        }
        buf.copy_within(used..len, 0);
        len -= used;
    }
    let _ = stream.shutdown().await;
    None
}

/// Ends the writing side, then reads and drops what the client still
/// sends, within [`LINGER`] and [`LINGER_BYTES`].
async fn linger<S: AsyncRead + AsyncWrite + Unpin>(stream: &mut S) {
    let _ = stream.shutdown().await;
    let until = tokio::time::Instant::now() + LINGER;
    let mut sink = [0u8; 4096];
    let mut left = LINGER_BYTES;
    while left > 0 {
        match tokio::time::timeout_at(until, stream.read(&mut sink)).await {
            Ok(Ok(n)) if n > 0 => left = left.saturating_sub(n),
            _ => return,
        }
    }
}

fn bad_text(status: Status) -> &'static str {
    match status {
        Status::HeadersTooLarge => "too many header fields\n",
        _ => "not an HTTP/1.x request\n",
    }
}

async fn write<S: AsyncWrite + Unpin>(stream: &mut S, bytes: &[u8]) -> std::io::Result<()> {
    match tokio::time::timeout(WRITE_TIMEOUT, stream.write_all(bytes)).await {
        Ok(r) => r,
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "client did not take its response",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(text: &str) -> Request {
        match parse(text.as_bytes()) {
            Parsed::Request(r, n) => {
                assert_eq!(n, text.len());
                r
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn heads_are_parsed() {
        let r = req(
            "GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\nAccept: application/openmetrics-text\r\n\r\n",
        );
        assert_eq!(r.path, "/metrics");
        assert!(r.keep_alive);
        assert!(!r.has_body);
        assert_eq!(r.accept.as_deref(), Some("application/openmetrics-text"));
        assert!(!req("GET / HTTP/1.0\r\n\r\n").keep_alive);
        assert!(req("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").keep_alive);
        assert!(!req("GET / HTTP/1.1\r\nConnection: close\r\n\r\n").keep_alive);
        assert!(req("POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\n").has_body);
        assert!(req("GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n").has_body);
        assert_eq!(parse(b"GET /metrics HTTP/1.1\r\nHost:"), Parsed::Partial);
        assert_eq!(
            parse(b"\x16\x03\x01garbage\r\n\r\n"),
            Parsed::Bad(Status::BadRequest)
        );
        assert_eq!(
            parse(b"PRI * HTTP/2.0\r\n\r\n"),
            Parsed::Bad(Status::BadRequest)
        );
        let many: String = (0..70).map(|i| format!("X-{i}: y\r\n")).collect();
        assert_eq!(
            parse(format!("GET / HTTP/1.1\r\n{many}\r\n").as_bytes()),
            Parsed::Bad(Status::HeadersTooLarge)
        );
    }

    #[test]
    fn routes_and_errors() {
        assert_eq!(
            route(&req("GET /metrics HTTP/1.1\r\n\r\n")),
            Ok(Route::Metrics)
        );
        assert_eq!(route(&req("HEAD / HTTP/1.1\r\n\r\n")), Ok(Route::Page));
        assert_eq!(
            route(&req("GET /status.json HTTP/1.1\r\n\r\n")),
            Ok(Route::Json)
        );
        let e = route(&req("DELETE /metrics HTTP/1.1\r\n\r\n")).unwrap_err();
        assert_eq!(e.status, Status::MethodNotAllowed);
        assert!(String::from_utf8(e.to_bytes(false))
            .unwrap()
            .contains("\r\nAllow: GET, HEAD\r\n"));
        assert_eq!(
            route(&req("GET /../etc/passwd HTTP/1.1\r\n\r\n"))
                .unwrap_err()
                .status,
            Status::NotFound
        );
        assert_eq!(
            route(&req("GET /metrics HTTP/1.1\r\nContent-Length: 3\r\n\r\n"))
                .unwrap_err()
                .status,
            Status::PayloadTooLarge
        );
        let bytes = Response::text(Status::Ok, "x").to_bytes(true);
        assert!(String::from_utf8(bytes).unwrap().ends_with("Content-Length: 1\r\nCache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\n\r\n"));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn keep_alive_then_close_and_bounded_heads() {
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        use std::sync::atomic::{AtomicUsize, Ordering};
        let written = std::sync::Arc::new(AtomicUsize::new(0));
        let counted = std::sync::Arc::clone(&written);
        let task = tokio::spawn(serve(
            server,
            Duration::from_secs(5),
            |r, _| Response::text(Status::Ok, &format!("{r:?}")),
            move || {
                counted.fetch_add(1, Ordering::Relaxed);
            },
        ));
        client
            .write_all(b"GET /metrics HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut out = String::new();
        client.read_to_string(&mut out).await.unwrap();
        assert_eq!(out.matches("HTTP/1.1 200 OK").count(), 2, "{out}");
        assert!(out.ends_with("Page"), "{out}");
        assert_eq!(task.await.unwrap(), None);
        assert_eq!(
            written.load(Ordering::Relaxed),
            2,
            "each response, once written"
        );

        let (mut client, server) = tokio::io::duplex(64 * 1024);
        let task = tokio::spawn(serve(
            server,
            Duration::from_secs(5),
            |_, _| Response::text(Status::Ok, ""),
            || {},
        ));
        client.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        client.write_all(&vec![b'a'; MAX_HEAD]).await.unwrap();
        let mut out = String::new();
        client.read_to_string(&mut out).await.unwrap();
        assert!(out.starts_with("HTTP/1.1 431 "), "{out}");
        assert!(matches!(
            task.await.unwrap(),
            Some(Trouble::Answered(Status::HeadersTooLarge, _))
        ));
    }

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn a_slow_head_times_out() {
        let (mut client, server) = tokio::io::duplex(1024);
        let task = tokio::spawn(serve(
            server,
            Duration::from_secs(5),
            |_, _| Response::text(Status::Ok, ""),
            || {},
        ));
        client.write_all(b"GET /metr").await.unwrap();
        let mut out = String::new();
        client.read_to_string(&mut out).await.unwrap();
        assert!(out.starts_with("HTTP/1.1 408 "), "{out}");
        assert!(matches!(
            task.await.unwrap(),
            Some(Trouble::Answered(Status::Timeout, _))
        ));
    }
}
