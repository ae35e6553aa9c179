//! The HTTP client side of the directory: uploading descriptors (relays) and fetching a
//! verified consensus (clients), over hyper's client connection API on a tokio `TcpStream`
//! (`docs/spec.md` §5.8–5.9).
//!
//! Every request runs under one time limit covering connect, request and response, and a
//! response body larger than the caller's cap is refused while it is being read.

use std::net::SocketAddr;
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::header::{CONTENT_TYPE, HOST};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use rand::seq::SliceRandom;
use shallot_proto::dir::{Consensus, MAX_CONSENSUS_LEN};
use thiserror::Error;
use tokio::net::TcpStream;

use crate::network::NetworkFile;
use crate::verify::{verify_consensus, VerifyError};

/// The largest reply to a descriptor upload that is read.
const MAX_REPLY_LEN: usize = 4096;

/// Why an HTTP exchange failed.
#[derive(Debug, Error)]
pub enum HttpError {
    /// The TCP connection failed.
    #[error("cannot connect: {0}")]
    Connect(std::io::Error),
    /// The exchange did not finish in time.
    #[error("no complete answer within {0:?}")]
    Timeout(Duration),
    /// The server broke HTTP.
    #[error("HTTP error: {0}")]
    Protocol(String),
    /// The response body is larger than allowed.
    #[error("response larger than {0} bytes")]
    TooLarge(usize),
}

/// A complete HTTP response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponse {
    /// The status code.
    pub status: StatusCode,
    /// The body.
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// The body as text, with a trailing newline removed: servers' one-line reasons.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).trim_end().to_string()
    }
}

/// Aborts a spawned task when dropped, so no connection outlives its request.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Sends one request to `addr` and reads the whole response, within `limit`; a response
/// body over `max_body` bytes fails with [`HttpError::TooLarge`].
pub async fn http_request(
    addr: SocketAddr,
    method: Method,
    path: &str,
    body: Option<String>,
    limit: Duration,
    max_body: usize,
) -> Result<HttpResponse, HttpError> {
    tokio::time::timeout(limit, exchange(addr, method, path, body, max_body))
        .await
        .map_err(|_| HttpError::Timeout(limit))?
}

async fn exchange(
    addr: SocketAddr,
    method: Method,
    path: &str,
    body: Option<String>,
    max_body: usize,
) -> Result<HttpResponse, HttpError> {
    let proto = |e: &dyn std::fmt::Display| HttpError::Protocol(e.to_string());
    let stream = TcpStream::connect(addr).await.map_err(HttpError::Connect)?;
    let _ = stream.set_nodelay(true);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| proto(&e))?;
    let _conn = AbortOnDrop(tokio::spawn(async move {
        let _ = conn.await;
    }));
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header(HOST, addr.to_string())
        .header(CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Full::new(Bytes::from(body.unwrap_or_default())))
        .map_err(|e| proto(&e))?;
    let response = sender.send_request(request).await.map_err(|e| proto(&e))?;
    let status = response.status();
    let body = Limited::new(response.into_body(), max_body)
        .collect()
        .await
        .map_err(|e| {
            if e.is::<http_body_util::LengthLimitError>() {
                HttpError::TooLarge(max_body)
            } else {
                HttpError::Protocol(e.to_string())
            }
        })?
        .to_bytes();
    Ok(HttpResponse {
        status,
        body: body.to_vec(),
    })
}

/// Why a descriptor upload failed.
#[derive(Debug, Error)]
pub enum UploadError {
    /// The authority refused the descriptor; `reason` is its one-line explanation.
    #[error("authority refused the descriptor ({status}): {reason}")]
    Refused {
        /// The HTTP status.
        status: StatusCode,
        /// The authority's reason.
        reason: String,
    },
    /// The authority could not be reached or answered badly.
    #[error("upload failed: {0}")]
    Http(#[from] HttpError),
}

/// Uploads a signed descriptor to the authority at `addr` (`POST /descriptor`).
pub async fn upload_descriptor(
    addr: SocketAddr,
    text: &str,
    limit: Duration,
) -> Result<(), UploadError> {
    let r = http_request(
        addr,
        Method::POST,
        "/descriptor",
        Some(text.to_string()),
        limit,
        MAX_REPLY_LEN,
    )
    .await?;
    if r.status == StatusCode::OK {
        Ok(())
    } else {
        Err(UploadError::Refused {
            status: r.status,
            reason: r.text(),
        })
    }
}

/// Why no consensus could be fetched.
#[derive(Debug, Error)]
pub enum FetchError {
    /// Every authority failed; the reasons, one per authority.
    #[error("no authority gave a usable consensus: {}", .0.join("; "))]
    AllFailed(Vec<String>),
}

/// Why one authority's consensus was not used.
#[derive(Debug, Error)]
enum TryError {
    #[error(transparent)]
    Http(#[from] HttpError),
    #[error("answered {0}: {1}")]
    Status(StatusCode, String),
    #[error("the consensus is not UTF-8 text")]
    NotText,
    #[error(transparent)]
    Verify(#[from] VerifyError),
}

/// Fetches `GET /consensus` from the configured authorities in random order, each within
/// `per_try_timeout`, and returns the first consensus that verifies (with its text, for
/// [`crate::verify::ConsensusCache::store`]). `cached` is the consensus already held: an older
/// one is refused.
pub async fn fetch_consensus(
    network: &NetworkFile,
    cached: Option<&Consensus>,
    now: u64,
    per_try_timeout: Duration,
) -> Result<(Consensus, String), FetchError> {
    let mut order: Vec<_> = network.authorities.iter().collect();
    order.shuffle(&mut rand::thread_rng());
    let mut failures = Vec::new();
    for auth in order {
        let attempt = async {
            let r = http_request(
                auth.address,
                Method::GET,
                "/consensus",
                None,
                per_try_timeout,
                MAX_CONSENSUS_LEN,
            )
            .await?;
            if r.status != StatusCode::OK {
                return Err(TryError::Status(r.status, r.text()));
            }
            let text = String::from_utf8(r.body).map_err(|_| TryError::NotText)?;
            let consensus = verify_consensus(&text, network, now, cached.map(|c| c.valid_after))?;
            Ok::<_, TryError>((consensus, text))
        };
        match attempt.await {
            Ok(found) => return Ok(found),
            Err(e) => {
                tracing::debug!(authority = %auth.name, "consensus fetch failed: {e}");
                failures.push(format!("{}: {e}", auth.name));
            }
        }
    }
    Err(FetchError::AllFailed(failures))
}
