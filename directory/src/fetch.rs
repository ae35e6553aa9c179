//! The HTTP client side of the directory: uploading descriptors (relays) and fetching a
//! verified consensus (clients) (`docs/spec.md` §5.8–5.9).
//!
//! The client is a small HTTP/1.1 one written here rather than hyper's, so that relays and
//! clients do not compile an HTTP stack for two kinds of request: one request per connection
//! (`Connection: close`), a response framed by `Content-Length`, chunked encoding or the end of
//! the stream, parsed by the pure [`parse_response`]. Every request runs under one time limit
//! covering connect, request and response, and a response body larger than the caller's cap is
//! refused while it is being read.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

pub use http::{Method, StatusCode};
use rand::seq::SliceRandom;
use shallot_crypto::hex;
use shallot_proto::dir::diff::{apply_diff, text_body_digest};
use shallot_proto::dir::{DocError, MAX_CONSENSUS_LEN};
use thiserror::Error;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::compress::{decompress_capped, DecompressError};
use crate::network::NetworkFile;
use crate::verify::{verify_consensus, VerifiedConsensus, VerifyError};
use shallot_proto::dir::Consensus;

/// The largest reply to a descriptor upload that is read.
const MAX_REPLY_LEN: usize = 4096;

/// The largest response head (status line and headers) that is read.
const MAX_HEAD_LEN: usize = 16 * 1024;

/// The longest chunk-size line of a chunked body.
const MAX_CHUNK_LINE_LEN: usize = 1024;

/// Why an HTTP exchange failed.
#[derive(Debug, Error)]
pub enum HttpError {
    /// The TCP connection failed.
    #[error("cannot connect: {0}")]
    Connect(std::io::Error),
    /// Sending the request or reading the response failed.
    #[error("connection failed: {0}")]
    Io(std::io::Error),
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
    /// The `Date` header, in Unix seconds, when there was one in the fixed form
    /// ([`crate::http_date`]).
    pub date: Option<u64>,
    /// The body.
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// The body as text, with a trailing newline removed: servers' one-line reasons.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).trim_end().to_string()
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
    if path
        .bytes()
        .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
    {
        return Err(HttpError::Protocol(format!("bad request path {path:?}")));
    }
    let mut stream = TcpStream::connect(addr).await.map_err(HttpError::Connect)?;
    let _ = stream.set_nodelay(true);
    let body = body.unwrap_or_default();
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: text/plain; charset=utf-8\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body.as_bytes());
    stream.write_all(&request).await.map_err(HttpError::Io)?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let n = stream.read(&mut chunk).await.map_err(HttpError::Io)?;
        buf.extend_from_slice(&chunk[..n]);
        if let Some(response) = parse_response(&buf, n == 0, max_body)? {
            return Ok(response);
        }
    }
}

/// Parses the response held so far in `buf`; `eof` says the server has closed the stream.
/// `Ok(None)` asks for more bytes. A body over `max_body` bytes is refused as soon as that is
/// known (a declared length, a chunk size, or the bytes themselves).
pub fn parse_response(
    buf: &[u8],
    eof: bool,
    max_body: usize,
) -> Result<Option<HttpResponse>, HttpError> {
    let bad = |what: &str| HttpError::Protocol(what.to_string());
    let Some(head_len) = find(buf, b"\r\n\r\n") else {
        if buf.len() > MAX_HEAD_LEN {
            return Err(bad("response head too long"));
        }
        if eof {
            return Err(bad("connection closed before the response head"));
        }
        return Ok(None);
    };
    if head_len > MAX_HEAD_LEN {
        return Err(bad("response head too long"));
    }
    let head = std::str::from_utf8(&buf[..head_len]).map_err(|_| bad("response head not text"))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    if !parts.next().is_some_and(|v| v.starts_with("HTTP/1.")) {
        return Err(bad("not an HTTP/1 response"));
    }
    let status = parts
        .next()
        .filter(|c| c.len() == 3)
        .and_then(|c| c.parse::<u16>().ok())
        .and_then(|c| StatusCode::from_u16(c).ok())
        .ok_or_else(|| bad("bad status code"))?;
    let mut length: Option<usize> = None;
    let mut chunked = false;
    let mut date = None;
    for line in lines {
        let (name, value) = line.split_once(':').ok_or_else(|| bad("bad header line"))?;
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            let n = value
                .parse::<usize>()
                .map_err(|_| bad("bad Content-Length"))?;
            if length.is_some_and(|l| l != n) {
                return Err(bad("two different Content-Lengths"));
            }
            length = Some(n);
        } else if name.eq_ignore_ascii_case("date") {
            date = crate::http_date::parse_http_date(value);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value
                .rsplit(',')
                .next()
                .is_some_and(|v| v.trim().eq_ignore_ascii_case("chunked"));
            if !chunked {
                return Err(bad("unsupported Transfer-Encoding"));
            }
        }
    }
    let rest = &buf[head_len + 4..];
    let body = if chunked {
        match decode_chunked(rest, max_body)? {
            Some(body) => body,
            None if eof => return Err(bad("connection closed inside a chunked body")),
            None => return Ok(None),
        }
    } else if let Some(n) = length {
        if n > max_body {
            return Err(HttpError::TooLarge(max_body));
        }
        if rest.len() < n {
            if eof {
                return Err(bad("connection closed before the whole body"));
            }
            return Ok(None);
        }
        rest[..n].to_vec()
    } else {
        if rest.len() > max_body {
            return Err(HttpError::TooLarge(max_body));
        }
        if !eof {
            return Ok(None);
        }
        rest.to_vec()
    };
    Ok(Some(HttpResponse { status, date, body }))
}

/// Decodes a complete chunked body from `buf`, or `Ok(None)` if it is not complete yet.
fn decode_chunked(mut buf: &[u8], max_body: usize) -> Result<Option<Vec<u8>>, HttpError> {
    let bad = |what: &str| HttpError::Protocol(what.to_string());
    let mut body = Vec::new();
    loop {
        let Some(line_len) = find(buf, b"\r\n") else {
            if buf.len() > MAX_CHUNK_LINE_LEN {
                return Err(bad("chunk size line too long"));
            }
            return Ok(None);
        };
        let line = std::str::from_utf8(&buf[..line_len]).map_err(|_| bad("bad chunk size"))?;
        let size_text = line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16).map_err(|_| bad("bad chunk size"))?;
        buf = &buf[line_len + 2..];
        if size == 0 {
            // Trailers, if any, end with an empty line.
            if buf.starts_with(b"\r\n") || find(buf, b"\r\n\r\n").is_some() {
                return Ok(Some(body));
            }
            return Ok(None);
        }
        if size > max_body.saturating_sub(body.len()) {
            return Err(HttpError::TooLarge(max_body));
        }
        if buf.len() < size + 2 {
            return Ok(None);
        }
        if &buf[size..size + 2] != b"\r\n" {
            return Err(bad("chunk not followed by CRLF"));
        }
        body.extend_from_slice(&buf[..size]);
        buf = &buf[size + 2..];
    }
}

/// Where `needle` first occurs in `haystack`.
fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
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
    #[error(transparent)]
    Decompress(#[from] DecompressError),
    #[error("the diff does not apply: {0}")]
    Diff(DocError),
}

/// What consensus fetches cost, counted across fetches (`docs/spec.md` §5.12): how many were
/// served as a diff from the consensus held, how many whole, and the bytes received.
#[derive(Debug, Default)]
pub struct FetchStats {
    /// Consensuses obtained by applying a diff.
    pub diffs: AtomicU64,
    /// Consensuses fetched whole (compressed).
    pub full: AtomicU64,
    /// Diffs that could not be used (missing base, bad diff, result not verifying), each
    /// followed by a whole fetch.
    pub diff_failures: AtomicU64,
    /// Response body bytes received for consensus and diff fetches, as sent (compressed).
    pub bytes: AtomicU64,
}

impl FetchStats {
    fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

/// Fetches the consensus from the configured authorities in random order, each within
/// `per_try_timeout`, and returns the first consensus that verifies (with its text, for
/// [`crate::verify::ConsensusCache::store`]). `cached` is the consensus already held: an older
/// one is refused. See [`fetch_consensus_counted`].
pub async fn fetch_consensus(
    network: &NetworkFile,
    cached: Option<&Consensus>,
    now: u64,
    per_try_timeout: Duration,
) -> Result<(VerifiedConsensus, String), FetchError> {
    let stats = FetchStats::default();
    fetch_consensus_dated(network, cached, now, per_try_timeout, &stats)
        .await
        .result
}

/// [`fetch_consensus`], counting into `stats`; see [`fetch_consensus_dated`].
pub async fn fetch_consensus_counted(
    network: &NetworkFile,
    cached: Option<&Consensus>,
    now: u64,
    per_try_timeout: Duration,
    stats: &FetchStats,
) -> Result<(VerifiedConsensus, String), FetchError> {
    fetch_consensus_dated(network, cached, now, per_try_timeout, stats)
        .await
        .result
}

/// An authority's clock, read from the `Date` header of its answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerDate {
    /// The authority's name in the network file.
    pub authority: String,
    /// Its `Date`, Unix seconds (whole seconds: the header has no finer unit).
    pub date: u64,
}

/// What [`fetch_consensus_dated`] got.
#[derive(Debug)]
pub struct DatedFetch {
    /// The consensus and its text, as [`fetch_consensus`] returns them.
    pub result: Result<(VerifiedConsensus, String), FetchError>,
    /// The `Date` of the authority that gave the consensus, else of the last one that
    /// answered at all (even refusing, or with a consensus this clock finds out of date):
    /// what a client compares its clock with.
    pub date: Option<ServerDate>,
}

/// [`fetch_consensus`], counting into `stats` and reporting the answering authority's `Date`
/// header. With a consensus held, each authority is first asked for the diff from it
/// (`GET /consensus/diff/<body digest>.z`); the diff is applied and the result verified like
/// any consensus. When that fails (no such base kept, a bad diff, a result that does not
/// verify), the same authority is asked for the whole consensus, compressed
/// (`GET /consensus.z`). Every compressed answer is decompressed under the cap of
/// [`MAX_CONSENSUS_LEN`].
pub async fn fetch_consensus_dated(
    network: &NetworkFile,
    cached: Option<&Consensus>,
    now: u64,
    per_try_timeout: Duration,
    stats: &FetchStats,
) -> DatedFetch {
    let base = cached.and_then(|c| c.encode().ok());
    let mut order: Vec<_> = network.authorities.iter().collect();
    order.shuffle(&mut rand::thread_rng());
    let mut failures = Vec::new();
    let mut date = None;
    let held_after = cached.map(|c| c.valid_after);
    for auth in order {
        let mut seen = None;
        let mut found = None;
        if let Some(base) = &base {
            let by_diff = async {
                let path = format!("/consensus/diff/{}.z", hex::encode(&text_body_digest(base)));
                let diff =
                    get_compressed(auth.address, &path, per_try_timeout, stats, &mut seen).await?;
                let text = apply_diff(base, &diff).map_err(TryError::Diff)?;
                let consensus = verify_consensus(&text, network, now, held_after)?;
                Ok::<_, TryError>((consensus, text))
            };
            match by_diff.await {
                Ok(got) => {
                    FetchStats::add(&stats.diffs, 1);
                    found = Some(got);
                }
                Err(e) => {
                    FetchStats::add(&stats.diff_failures, 1);
                    tracing::debug!(authority = %auth.name, "consensus diff not used: {e}");
                    // An authority that could not be reached, or did not answer in time, is
                    // not asked again for the whole consensus: that would spend a second
                    // timeout on a dead host before the next authority is tried.
                    if matches!(
                        e,
                        TryError::Http(
                            HttpError::Connect(_) | HttpError::Io(_) | HttpError::Timeout(_)
                        )
                    ) {
                        failures.push(format!("{}: {e}", auth.name));
                        continue;
                    }
                }
            }
        }
        if found.is_none() {
            let whole = async {
                let text = get_compressed(
                    auth.address,
                    "/consensus.z",
                    per_try_timeout,
                    stats,
                    &mut seen,
                )
                .await?;
                let text = String::from_utf8(text).map_err(|_| TryError::NotText)?;
                let consensus = verify_consensus(&text, network, now, held_after)?;
                Ok::<_, TryError>((consensus, text))
            };
            match whole.await {
                Ok(got) => {
                    FetchStats::add(&stats.full, 1);
                    found = Some(got);
                }
                Err(e) => {
                    tracing::debug!(authority = %auth.name, "consensus fetch failed: {e}");
                    failures.push(format!("{}: {e}", auth.name));
                }
            }
        }
        if let Some(d) = seen {
            date = Some(ServerDate {
                authority: auth.name.clone(),
                date: d,
            });
        }
        if let Some(got) = found {
            return DatedFetch {
                result: Ok(got),
                date,
            };
        }
    }
    DatedFetch {
        result: Err(FetchError::AllFailed(failures)),
        date,
    }
}

/// GETs a zstd-compressed document and returns it decompressed under
/// [`MAX_CONSENSUS_LEN`]; the answer's `Date`, if it had one, goes to `date`.
async fn get_compressed(
    addr: SocketAddr,
    path: &str,
    limit: Duration,
    stats: &FetchStats,
    date: &mut Option<u64>,
) -> Result<Vec<u8>, TryError> {
    let r = http_request(addr, Method::GET, path, None, limit, MAX_CONSENSUS_LEN).await?;
    if r.date.is_some() {
        *date = r.date;
    }
    FetchStats::add(
        &stats.bytes,
        u64::try_from(r.body.len()).unwrap_or(u64::MAX),
    );
    if r.status != StatusCode::OK {
        return Err(TryError::Status(r.status, r.text()));
    }
    Ok(decompress_capped(&r.body, MAX_CONSENSUS_LEN)?)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn parse(raw: &[u8], eof: bool) -> Result<Option<HttpResponse>, HttpError> {
        parse_response(raw, eof, 16)
    }

    #[test]
    fn content_length_body_is_complete_without_eof() {
        let raw = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello";
        let r = parse(raw, false).unwrap().unwrap();
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.body, b"hello");
        // Half a body waits for more, and a close in the middle is an error.
        assert!(parse(&raw[..raw.len() - 2], false).unwrap().is_none());
        assert!(matches!(
            parse(&raw[..raw.len() - 2], true),
            Err(HttpError::Protocol(_))
        ));
    }

    #[test]
    fn chunked_body_is_reassembled() {
        let raw = b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n";
        let r = parse(raw, false).unwrap().unwrap();
        assert_eq!(r.status, StatusCode::NOT_FOUND);
        assert_eq!(r.body, b"abcde");
        for cut in 40..raw.len() {
            assert!(parse(&raw[..cut], false).unwrap().is_none(), "cut {cut}");
        }
    }

    #[test]
    fn the_date_header_is_read_when_in_the_fixed_form() {
        let raw =
            b"HTTP/1.1 200 OK\r\ndate: Sun, 06 Nov 1994 08:49:37 GMT\r\ncontent-length: 0\r\n\r\n";
        assert_eq!(parse(raw, false).unwrap().unwrap().date, Some(784_111_777));
        let odd = b"HTTP/1.1 200 OK\r\nDate: yesterday\r\ncontent-length: 0\r\n\r\n";
        assert_eq!(parse(odd, false).unwrap().unwrap().date, None);
        let none = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";
        assert_eq!(parse(none, false).unwrap().unwrap().date, None);
    }

    /// An authority that refuses still tells its time: a client whose clock is so far off
    /// that no consensus verifies can still learn by how much.
    #[tokio::test]
    async fn a_refusing_authority_still_gives_its_date() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf).await.unwrap();
            s.write_all(
                b"HTTP/1.1 503 Service Unavailable\r\nDate: Tue, 01 Dec 2026 03:30:00 GMT\r\n\
                  Content-Length: 4\r\n\r\nbusy",
            )
            .await
            .unwrap();
        });
        let key = shallot_crypto::keys::IdentityKeypair::generate(&mut rand::thread_rng()).public();
        let network = NetworkFile {
            authorities: vec![crate::network::AuthorityInfo {
                name: "auth1".into(),
                address,
                key,
            }],
            params: crate::network::NetworkParams::default(),
        };
        let fetched = fetch_consensus_dated(
            &network,
            None,
            0,
            Duration::from_secs(10),
            &FetchStats::default(),
        )
        .await;
        server.await.unwrap();
        let err = fetched.result.unwrap_err().to_string();
        assert!(err.contains("auth1") && err.contains("busy"), "{err}");
        assert_eq!(
            fetched.date,
            Some(ServerDate {
                authority: "auth1".into(),
                date: 1_796_095_800
            })
        );
    }

    #[test]
    fn body_to_end_of_stream() {
        let raw = b"HTTP/1.0 503 Service Unavailable\r\n\r\nbusy\n";
        assert!(parse(raw, false).unwrap().is_none());
        let r = parse(raw, true).unwrap().unwrap();
        assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(r.text(), "busy");
    }

    #[test]
    fn oversized_bodies_are_refused_before_they_arrive() {
        let declared = b"HTTP/1.1 200 OK\r\nContent-Length: 17\r\n\r\n";
        assert!(matches!(
            parse(declared, false),
            Err(HttpError::TooLarge(16))
        ));
        let chunk = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nff\r\n";
        assert!(matches!(parse(chunk, false), Err(HttpError::TooLarge(16))));
        let chunks =
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n9\r\n123456789\r\n9\r\n";
        assert!(matches!(parse(chunks, false), Err(HttpError::TooLarge(16))));
        let stream = b"HTTP/1.1 200 OK\r\n\r\n0123456789abcdefg";
        assert!(matches!(parse(stream, false), Err(HttpError::TooLarge(16))));
    }

    #[test]
    fn broken_heads_are_refused() {
        for raw in [
            &b"SMTP 220 hi\r\n\r\n"[..],
            b"HTTP/1.1 2000 OK\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nab\r\n",
        ] {
            assert!(
                matches!(parse(raw, true), Err(HttpError::Protocol(_))),
                "{}",
                String::from_utf8_lossy(raw)
            );
        }
        assert!(matches!(
            parse(b"HTTP/1.1 200", true),
            Err(HttpError::Protocol(_))
        ));
        let endless = vec![b'a'; MAX_HEAD_LEN + 1];
        assert!(matches!(
            parse(&endless, false),
            Err(HttpError::Protocol(_))
        ));
    }
}
