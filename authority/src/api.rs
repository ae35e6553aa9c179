//! The authority's HTTP API (`docs/spec.md` §5.8): routes, body limits, and the one-line
//! reasons given with every refusal.
//!
//! | request | answer |
//! |---|---|
//! | `POST /descriptor` | 200 `accepted`; 400 malformed, bad signature, future, too old or not routable; 409 not newer than the one held, or link key or address proved by another relay; 413 too large; 429 upload or network limit, unproven descriptors from the uploader's network, or link key claimed too often; 503 descriptor limit; 408 body too slow |
//! | `GET /descriptor/<digest>` | 200 the descriptor with that digest, if held or named by a vote; 404 none |
//! | `GET /consensus` | 200 the consensus with every signature collected; 404 none yet |
//! | `GET /consensus.z` | the same, zstd-compressed |
//! | `GET /consensus/diff/<digest>[.z]` | 200 the diff from the kept consensus with that body digest to the one served (compressed with `.z`); 400 not 64 hex digits; 404 no such consensus kept, or none yet |
//! | `GET /vote/<valid-after>` | 200 this authority's vote for that period; 404 none |
//! | `GET /vote/<valid-after>/<authority>` | 200 the vote this authority holds from that authority; 404 none |
//! | `GET /votes/<valid-after>` | 200 the list of every vote held (`equivocation::VoteList`); 425 before the exchange closed |
//! | `GET /votes/<valid-after>/<digest>` | 200 the vote held with that digest; 404 none |
//! | `POST /vote` | 200 `accepted`; 400 bad vote; 403 not a peer; 409 conflicting vote (kept as evidence) or exchange closed; 503 busy |
//! | `GET /signature/<valid-after>` | 200 this authority's detached signature; 404 none |

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use shallot_proto::dir::{DetachedSignature, Vote, MAX_DESCRIPTOR_LEN, MAX_VOTE_LEN};

use super::admit::AdmitError;
use super::schedule::now_secs;
use super::state::VoteRecord;
use super::Shared;
use shallot_directory::equivocation::VoteList;

/// Vote bodies read at once. Anyone can send one, and each may be 32 MiB, so this bounds
/// the memory they can take; peers also fetch votes, so a refused push costs nothing.
pub const MAX_VOTE_UPLOADS: usize = 4;

/// The client's address, put in each request's extensions by the server.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PeerAddr(pub SocketAddr);

/// A refusal: a status and a one-line reason.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    reason: String,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, reason: impl Into<String>) -> Self {
        ApiError {
            status,
            reason: reason.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        text(self.status, self.reason)
    }
}

fn text(status: StatusCode, body: String) -> Response {
    let mut body = body.replace('\n', " ");
    body.push('\n');
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body,
    )
        .into_response()
}

fn document(body: impl Into<Bytes>) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body.into(),
    )
        .into_response()
}

/// The routes, over the authority's shared state.
pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/descriptor", post(post_descriptor))
        .route("/descriptor/{digest}", get(get_descriptor))
        .route("/consensus", get(get_consensus))
        .route("/consensus.z", get(get_consensus_compressed))
        .route("/consensus/diff/{name}", get(get_consensus_diff))
        .route("/vote", post(post_vote))
        .route("/vote/{valid_after}", get(get_vote))
        .route("/vote/{valid_after}/{authority}", get(get_vote_from))
        .route("/votes/{valid_after}", get(get_vote_list))
        .route("/votes/{valid_after}/{digest}", get(get_vote_by_digest))
        .route("/signature/{valid_after}", get(get_signature))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no such resource") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method not allowed here")
        })
        .layer(axum::middleware::map_request_with_state(
            shared.clone(),
            count_request,
        ))
        .with_state(shared)
}

/// Counts every request the router answers, for the operator's metrics.
async fn count_request(
    State(shared): State<Arc<Shared>>,
    req: axum::extract::Request,
) -> axum::extract::Request {
    shared
        .requests_served
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    req
}

/// Reads a whole text body of at most `cap` bytes within `limit`.
async fn read_body(
    headers: &HeaderMap,
    body: Body,
    cap: usize,
    limit: Duration,
    what: &str,
) -> Result<String, ApiError> {
    let too_large = |len: Option<u64>| {
        let len = len.map_or_else(String::new, |l| format!(" of {l} bytes"));
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("{what}{len} exceeds the limit of {cap} bytes"),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > cap as u64) {
        return Err(too_large(declared));
    }
    let collected = tokio::time::timeout(limit, Limited::new(body, cap).collect())
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                format!("{what} not received within {} s", limit.as_secs()),
            )
        })?
        .map_err(|e| {
            if e.is::<LengthLimitError>() {
                too_large(None)
            } else {
                ApiError::new(StatusCode::BAD_REQUEST, format!("cannot read the {what}"))
            }
        })?;
    String::from_utf8(collected.to_bytes().to_vec())
        .map_err(|_| ApiError::new(StatusCode::BAD_REQUEST, format!("{what} is not UTF-8 text")))
}

async fn post_descriptor(
    State(shared): State<Arc<Shared>>,
    Extension(PeerAddr(peer)): Extension<PeerAddr>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let params = shared.network.params;
    if !shared.limits.allow_upload(peer.ip()) {
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "upload limit of {} descriptors per minute from the network of {} reached; \
                 try later",
                params.max_uploads_per_minute,
                peer.ip()
            ),
        ));
    }
    let limit = Duration::from_secs(params.request_timeout_secs);
    let text = read_body(&headers, body, MAX_DESCRIPTOR_LEN, limit, "descriptor").await?;

    let _serial = shared.descriptor_lock.lock().await;
    let admitted = shared
        .state()
        .admit_from(&text, now_secs(), &params, peer.ip())
        .map_err(|e| {
            let status = match e {
                AdmitError::NotNewer { .. }
                | AdmitError::LinkKeyTaken(_)
                | AdmitError::AddressTaken(_) => StatusCode::CONFLICT,
                AdmitError::LinkKeyLimit { .. }
                | AdmitError::NetworkFull { .. }
                | AdmitError::UploaderFull { .. } => StatusCode::TOO_MANY_REQUESTS,
                AdmitError::Full { .. } => StatusCode::SERVICE_UNAVAILABLE,
                _ => StatusCode::BAD_REQUEST,
            };
            ApiError::new(status, e.to_string())
        })?;
    tracing::info!("accepted descriptor of {} from {peer}", admitted.id);
    let id = admitted.id;
    let evicted = admitted.evicted.clone();
    shared
        .persist("descriptor", move |store| {
            for e in &evicted {
                store.remove_descriptor(e);
            }
            store.save_descriptor(&id, &text)
        })
        .await;
    drop(_serial);
    if admitted.needs_probe {
        // A full queue is fine: the periodic probe round covers every relay.
        let _ = shared.probe_tx.try_send(id);
    }
    Ok(text_ok())
}

fn text_ok() -> Response {
    text(StatusCode::OK, "accepted".into())
}

fn parse_hex32(raw: &str, what: &str) -> Result<[u8; 32], ApiError> {
    shallot_crypto::hex::decode_array(raw).map_err(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("{what} is not 64 hex digits"),
        )
    })
}

async fn get_descriptor(
    State(shared): State<Arc<Shared>>,
    Path(raw): Path<String>,
) -> Result<Response, ApiError> {
    let digest = parse_hex32(&raw, "the digest")?;
    let text = {
        let state = shared.state();
        #[cfg(feature = "misbehave")]
        if let Some(text) = shared
            .misbehaviour
            .as_ref()
            .and_then(|m| m.forged_text(&digest))
        {
            return Ok(document(text));
        }
        state
            .by_digest
            .get(&digest)
            .map(|(a, _)| a.text.clone())
            .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "no descriptor with that digest"))?
    };
    Ok(document(text))
}

async fn get_consensus(State(shared): State<Arc<Shared>>) -> Result<Response, ApiError> {
    Ok(document(serving(&shared)?.0))
}

/// The consensus served now, zstd-compressed, from the answers computed once per version.
async fn get_consensus_compressed(State(shared): State<Arc<Shared>>) -> Result<Response, ApiError> {
    Ok(compressed(served(&shared).await?.compressed.clone()))
}

/// The diff from the consensus whose body has the digest named to the one served now
/// (`<hex digest>`, or `<hex digest>.z` for it zstd-compressed), from the consensuses this
/// authority still keeps, the last day's (`docs/spec.md` §5.12), each computed once per
/// version of the served text.
async fn get_consensus_diff(
    State(shared): State<Arc<Shared>>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let (hex_digest, zstd) = match name.strip_suffix(".z") {
        Some(h) => (h, true),
        None => (name.as_str(), false),
    };
    let base_digest = shallot_crypto::hex::decode_array::<32>(hex_digest)
        .ok()
        .filter(|_| hex_digest.len() == 64)
        .ok_or_else(|| ApiError::new(StatusCode::BAD_REQUEST, "not a 64-hex-digit digest"))?;
    let answers = served(&shared).await?;
    let diff = shared.served.diff(&answers, &base_digest).await;
    let diff = diff.ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "no consensus with that digest is kept: fetch /consensus.z",
        )
    })?;
    Ok(if zstd {
        compressed(diff.compressed.clone())
    } else {
        (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/octet-stream")],
            diff.plain.clone(),
        )
            .into_response()
    })
}

/// The compressed consensus and diffs for the consensus served now: cached, or computed
/// once for this version of its text (`served.rs`).
async fn served(shared: &Shared) -> Result<Arc<super::served::Served>, ApiError> {
    let now = now_secs();
    let (_, serial) = serving(shared)?;
    let load = || {
        let state = shared.state();
        let target = state.serving(now, shared.network.majority())?.clone();
        // Every kept consensus up to the served one is a base, the served one too (a client
        // holding it with fewer signatures gets them as a diff). A newer one, held while too
        // few have signed it to be served (`State::serving`), is not: a diff from it would go
        // backwards, to a consensus its holder refuses as older.
        let bases = state
            .consensuses
            .range(..=target.consensus.valid_after)
            .map(|(_, r)| r.clone())
            .collect();
        Some((target, bases))
    };
    shared
        .served
        .get(serial, load)
        .await
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "no consensus yet"))
}

/// The text of the consensus to serve now and its version (`ConsensusRecord::serial`), or
/// the 404 that says when the first is due.
fn serving(shared: &Shared) -> Result<(Bytes, u64), ApiError> {
    let now = shared
        .state()
        .serving(now_secs(), shared.network.majority())
        .map(|r| (r.text.clone(), r.serial));
    now.ok_or_else(|| {
        let due = shared.schedule.next_period(super::schedule::now_ms());
        ApiError::new(
            StatusCode::NOT_FOUND,
            format!(
                "no consensus yet; the first is due at {}",
                shallot_directory::network::clock_utc(due)
            ),
        )
    })
}

/// A zstd-compressed document.
fn compressed(body: Bytes) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/zstd")],
        body,
    )
        .into_response()
}

fn parse_period(raw: &str) -> Result<u64, ApiError> {
    shallot_proto::dir::lines::parse_u64(raw)
        .ok_or_else(|| ApiError::new(StatusCode::BAD_REQUEST, "the period is not an integer"))
}

async fn get_vote(
    State(shared): State<Arc<Shared>>,
    Path(raw): Path<String>,
) -> Result<Response, ApiError> {
    let t = parse_period(&raw)?;
    let text = shared
        .state()
        .votes
        .get(&t)
        .and_then(|by_auth| by_auth.get(shared.me.as_bytes()))
        .map(|r| r.text.clone())
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "no vote for that period"))?;
    Ok(document(text))
}

async fn get_vote_from(
    State(shared): State<Arc<Shared>>,
    Path((raw, author)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let t = parse_period(&raw)?;
    let author = parse_hex32(&author, "the authority key")?;
    let text = shared
        .state()
        .votes
        .get(&t)
        .and_then(|by_auth| by_auth.get(&author))
        .map(|r| r.text.clone())
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "no vote from that authority"))?;
    Ok(document(text))
}

async fn get_vote_list(
    State(shared): State<Arc<Shared>>,
    Path(raw): Path<String>,
) -> Result<Response, ApiError> {
    let t = parse_period(&raw)?;
    let state = shared.state();
    if !state.frozen.contains(&t) {
        return Err(ApiError::new(
            StatusCode::TOO_EARLY,
            "the vote exchange for that period has not closed yet",
        ));
    }
    let list = VoteList {
        valid_after: t,
        votes: state.holdings(t),
    };
    Ok(document(list.encode()))
}

async fn get_vote_by_digest(
    State(shared): State<Arc<Shared>>,
    Path((raw, digest)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let t = parse_period(&raw)?;
    let digest = parse_hex32(&digest, "the digest")?;
    let text = shared
        .state()
        .vote_by_digest(t, &digest)
        .map(|r| r.text.clone())
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "no vote with that digest"))?;
    Ok(document(text))
}

async fn post_vote(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let params = shared.network.params;
    let limit = Duration::from_secs(params.request_timeout_secs);
    let _reading = shared.vote_uploads.try_acquire().map_err(|_| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many votes are being received at once; try again",
        )
    })?;
    let text = read_body(&headers, body, MAX_VOTE_LEN, limit, "vote").await?;
    let vote = Vote::parse_and_verify(&text)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.to_string()))?;
    let bad = |reason: &str| ApiError::new(StatusCode::BAD_REQUEST, reason.to_string());
    if vote.authority == shared.me || shared.network.authority(&vote.authority).is_none() {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "the vote's authority is not a configured peer",
        ));
    }
    let schedule = shared.schedule;
    if !schedule.is_period_start(vote.valid_after)
        || schedule.period(vote.valid_after) != vote_period(&vote)
    {
        return Err(bad("the vote's times do not follow the voting schedule"));
    }
    let now = now_secs();
    let i = params.voting_interval_secs;
    if vote.valid_after + i < now || vote.valid_after > now + 2 * i {
        return Err(bad("the vote is not for a current period"));
    }
    let t = vote.valid_after;
    let mut state = shared.state();
    if state.frozen.contains(&t) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "the vote exchange for that period has closed",
        ));
    }
    if !state.add_vote(t, VoteRecord::new(vote, text)) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "a different vote from that authority is already held for that period; both are \
             kept as evidence",
        ));
    }
    Ok(text_ok())
}

fn vote_period(v: &Vote) -> shallot_directory::compute::Period {
    shallot_directory::compute::Period {
        valid_after: v.valid_after,
        fresh_until: v.fresh_until,
        valid_until: v.valid_until,
    }
}

async fn get_signature(
    State(shared): State<Arc<Shared>>,
    Path(raw): Path<String>,
) -> Result<Response, ApiError> {
    let t = parse_period(&raw)?;
    let state = shared.state();
    let record = state
        .consensuses
        .get(&t)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "no consensus for that period"))?;
    let signature = record
        .consensus
        .signatures
        .iter()
        .find(|(k, _)| *k == shared.me)
        .map(|(_, s)| *s)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "no signature for that period"))?;
    let detached = DetachedSignature {
        digest: record.digest,
        authority: shared.me,
        signature,
    };
    Ok(document(detached.encode()))
}
