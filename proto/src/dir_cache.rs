//! Directory messages between a client and a relay acting as its directory cache
//! (`docs/spec.md` §5.13): the client asks its guard, on a one-hop circuit, for the consensus
//! with `DIR_GET` naming the body digest of the consensus it holds; the relay answers with
//! `DIR_ANSWER` (what it sends, and how many bytes) followed by that many bytes in
//! `DIR_CHUNK` messages, under the circuit's flow control.
//!
//! [`DirDownload`] is the client's side of an answer as a state machine without I/O: it
//! refuses an answer larger than its cap before any byte of it arrives, chunks before the
//! answer or past its length, and a second answer; it says when the answer is whole.

use shallot_crypto::reader::{DecodeError, Reader, Writer};

/// The type bytes of the directory messages (beside those of [`crate::relay_msg`] and
/// [`crate::mailbox`]).
pub mod kind {
    /// `DIR_GET`: client → cache.
    pub const DIR_GET: u8 = 40;
    /// `DIR_ANSWER`: cache → client, once per request.
    pub const DIR_ANSWER: u8 = 41;
    /// `DIR_CHUNK`: cache → client, after the answer.
    pub const DIR_CHUNK: u8 = 42;
}

/// The most bytes one `DIR_CHUNK` carries (under [`crate::relay_msg::MAX_RELAY_MSG_LEN`]).
pub const MAX_DIR_CHUNK: usize = 16 * 1024;

/// `DIR_GET`'s flag for a consensus held by a client that reads diffs of version 5
/// (`docs/spec.md` §5.12). Flags 1 and 2 came from clients of consensus version 3, which can
/// read neither a diff nor a consensus of version 4: they are refused as malformed.
const HELD_READS_DIFF_5: u8 = 3;

/// What a cache sends in answer to `DIR_GET`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnswerForm {
    /// It holds no consensus (or will not serve now): ask elsewhere. No bytes follow.
    Unavailable,
    /// The whole consensus, zstd-compressed.
    Full,
    /// The diff from the consensus the client named to the newest, zstd-compressed.
    Diff,
}

impl AnswerForm {
    fn code(self) -> u8 {
        match self {
            AnswerForm::Unavailable => 0,
            AnswerForm::Full => 1,
            AnswerForm::Diff => 2,
        }
    }

    fn from_code(code: u8) -> Result<Self, DecodeError> {
        match code {
            0 => Ok(AnswerForm::Unavailable),
            1 => Ok(AnswerForm::Full),
            2 => Ok(AnswerForm::Diff),
            _ => Err(DecodeError::BadValue {
                field: "directory answer form",
                reason: "unknown form",
            }),
        }
    }
}

/// A directory message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DirMsg {
    /// Asks for the newest consensus; `base` is the body digest
    /// ([`crate::dir::diff::text_body_digest`]) of the one the client holds, if any, so that
    /// the cache can answer with a diff from it.
    Get {
        /// The digest of the consensus held.
        base: Option<[u8; 32]>,
    },
    /// The head of an answer: its form and how many bytes follow in chunks.
    Answer {
        /// What follows.
        form: AnswerForm,
        /// Bytes that follow (0 for [`AnswerForm::Unavailable`]).
        len: u32,
    },
    /// Bytes of the answer, in order (1 to [`MAX_DIR_CHUNK`] of them).
    Chunk(Vec<u8>),
}

impl DirMsg {
    /// Whether `k` is the type byte of a directory message.
    pub fn is_dir_kind(k: u8) -> bool {
        matches!(k, kind::DIR_GET | kind::DIR_ANSWER | kind::DIR_CHUNK)
    }

    /// Appends the message, type byte first.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        match self {
            DirMsg::Get { base } => {
                out.put_u8(kind::DIR_GET);
                match base {
                    None => out.put_u8(0),
                    Some(d) => {
                        out.put_u8(HELD_READS_DIFF_5);
                        out.put(d);
                    }
                }
            }
            DirMsg::Answer { form, len } => {
                out.put_u8(kind::DIR_ANSWER);
                out.put_u8(form.code());
                out.put_u32(*len);
            }
            DirMsg::Chunk(bytes) => {
                out.put_u8(kind::DIR_CHUNK);
                out.put(bytes);
            }
        }
    }

    /// Decodes the fields of a message of type `k` (the type byte already read); the caller
    /// finishes the reader.
    pub fn decode_fields(k: u8, r: &mut Reader<'_>) -> Result<DirMsg, DecodeError> {
        match k {
            kind::DIR_GET => {
                let base = match r.u8()? {
                    0 => None,
                    HELD_READS_DIFF_5 => Some(r.array()?),
                    _ => {
                        return Err(DecodeError::BadValue {
                            field: "DIR_GET base",
                            reason: "presence flag is not 0 or 3",
                        })
                    }
                };
                Ok(DirMsg::Get { base })
            }
            kind::DIR_ANSWER => {
                let form = AnswerForm::from_code(r.u8()?)?;
                let len = r.u32()?;
                if form == AnswerForm::Unavailable && len != 0 {
                    return Err(DecodeError::BadValue {
                        field: "directory answer length",
                        reason: "an unavailable answer carries no bytes",
                    });
                }
                Ok(DirMsg::Answer { form, len })
            }
            kind::DIR_CHUNK => {
                let bytes = r.take_rest();
                if bytes.is_empty() {
                    return Err(DecodeError::BadValue {
                        field: "DIR_CHUNK",
                        reason: "empty chunk",
                    });
                }
                if bytes.len() > MAX_DIR_CHUNK {
                    return Err(DecodeError::TooLong {
                        len: bytes.len(),
                        max: MAX_DIR_CHUNK,
                    });
                }
                Ok(DirMsg::Chunk(bytes.to_vec()))
            }
            other => Err(DecodeError::UnknownRelayMessage(other)),
        }
    }

    /// The messages that carry an answer of `form` with `bytes`: the head, then the chunks.
    pub fn answer(form: AnswerForm, bytes: &[u8]) -> Vec<DirMsg> {
        let bytes = if form == AnswerForm::Unavailable {
            &[][..]
        } else {
            bytes
        };
        let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
        let mut msgs = vec![DirMsg::Answer { form, len }];
        msgs.extend(
            bytes
                .chunks(MAX_DIR_CHUNK)
                .map(|c| DirMsg::Chunk(c.to_vec())),
        );
        msgs
    }
}

/// Why a cache's answer was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DownloadError {
    /// The answer announced more bytes than the client accepts.
    #[error("the cache announced {len} bytes, over the limit of {max}")]
    TooLarge {
        /// Bytes announced.
        len: u32,
        /// The client's limit.
        max: usize,
    },
    /// A chunk came before the answer's head.
    #[error("the cache sent bytes before its answer")]
    ChunkFirst,
    /// Chunks carried more than the answer announced.
    #[error("the cache sent more bytes than it announced ({len})")]
    Overrun {
        /// Bytes announced.
        len: u32,
    },
    /// A second answer, or a request, came on the directory circuit.
    #[error("the cache sent an unexpected message")]
    Unexpected,
}

/// A whole answer from a cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Download {
    /// Its form.
    pub form: AnswerForm,
    /// Its bytes (compressed).
    pub bytes: Vec<u8>,
}

/// The client's side of one answer: feed it each directory message in order.
#[derive(Debug)]
pub struct DirDownload {
    max: usize,
    head: Option<(AnswerForm, usize)>,
    bytes: Vec<u8>,
}

impl DirDownload {
    /// A download refusing answers over `max` bytes.
    pub fn new(max: usize) -> Self {
        DirDownload {
            max,
            head: None,
            bytes: Vec::new(),
        }
    }

    /// Bytes received so far, and bytes announced (once the head has come).
    pub fn progress(&self) -> (usize, Option<usize>) {
        (self.bytes.len(), self.head.map(|(_, len)| len))
    }

    /// Takes the next message; returns the answer once it is whole.
    pub fn push(&mut self, msg: DirMsg) -> Result<Option<Download>, DownloadError> {
        match (msg, self.head) {
            (DirMsg::Answer { form, len }, None) => {
                let n = usize::try_from(len).unwrap_or(usize::MAX);
                if n > self.max {
                    return Err(DownloadError::TooLarge { len, max: self.max });
                }
                self.head = Some((form, n));
                // Memory grows with the bytes received, never ahead of them.
                Ok(self.finished(form, n))
            }
            (DirMsg::Chunk(_), None) => Err(DownloadError::ChunkFirst),
            (DirMsg::Chunk(c), Some((form, n))) => {
                if self.bytes.len() + c.len() > n {
                    return Err(DownloadError::Overrun {
                        len: u32::try_from(n).unwrap_or(u32::MAX),
                    });
                }
                self.bytes.extend_from_slice(&c);
                Ok(self.finished(form, n))
            }
            (DirMsg::Answer { .. } | DirMsg::Get { .. }, _) => Err(DownloadError::Unexpected),
        }
    }

    fn finished(&mut self, form: AnswerForm, n: usize) -> Option<Download> {
        (self.bytes.len() == n).then(|| Download {
            form,
            bytes: std::mem::take(&mut self.bytes),
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;

    pub(crate) fn arb_dir_msg() -> impl Strategy<Value = DirMsg> {
        prop_oneof![
            any::<Option<[u8; 32]>>().prop_map(|base| DirMsg::Get { base }),
            Just(DirMsg::Answer {
                form: AnswerForm::Unavailable,
                len: 0
            }),
            (
                prop_oneof![Just(AnswerForm::Full), Just(AnswerForm::Diff)],
                any::<u32>()
            )
                .prop_map(|(form, len)| DirMsg::Answer { form, len }),
            proptest::collection::vec(any::<u8>(), 1..2000).prop_map(DirMsg::Chunk),
        ]
    }

    fn decode(raw: &[u8]) -> Result<DirMsg, DecodeError> {
        let mut r = Reader::new(raw);
        let k = r.u8()?;
        let m = DirMsg::decode_fields(k, &mut r)?;
        r.finish()?;
        Ok(m)
    }

    fn encode(m: &DirMsg) -> Vec<u8> {
        let mut out = Vec::new();
        m.encode_into(&mut out);
        out
    }

    proptest! {
        #[test]
        fn messages_round_trip(m in arb_dir_msg()) {
            prop_assert_eq!(decode(&encode(&m)).unwrap(), m);
        }

        #[test]
        fn garbage_never_panics_and_what_decodes_re_encodes(
            k in prop_oneof![Just(kind::DIR_GET), Just(kind::DIR_ANSWER), Just(kind::DIR_CHUNK)],
            body in proptest::collection::vec(any::<u8>(), 0..80),
        ) {
            let mut raw = vec![k];
            raw.extend_from_slice(&body);
            if let Ok(m) = decode(&raw) {
                prop_assert_eq!(encode(&m), raw);
            }
        }

        #[test]
        fn any_answer_downloads_whole(
            form in prop_oneof![Just(AnswerForm::Full), Just(AnswerForm::Diff)],
            bytes in proptest::collection::vec(any::<u8>(), 0..40_000),
        ) {
            let mut d = DirDownload::new(40_000);
            let msgs = DirMsg::answer(form, &bytes);
            let last = msgs.len() - 1;
            for (i, m) in msgs.into_iter().enumerate() {
                let got = d.push(m).unwrap();
                if i == last {
                    prop_assert_eq!(got, Some(Download { form, bytes: bytes.clone() }));
                } else {
                    prop_assert_eq!(got, None);
                }
            }
        }
    }

    #[test]
    fn a_client_of_an_older_consensus_version_is_refused() {
        for flag in [1, 2] {
            let mut old = vec![kind::DIR_GET, flag];
            old.extend_from_slice(&[7; 32]);
            assert!(matches!(decode(&old), Err(DecodeError::BadValue { .. })));
        }
        let new = encode(&DirMsg::Get {
            base: Some([7; 32]),
        });
        assert_eq!(new[..2], [kind::DIR_GET, 3]);
        assert_eq!(
            decode(&new),
            Ok(DirMsg::Get {
                base: Some([7; 32])
            })
        );
    }

    #[test]
    fn bad_messages_are_typed_errors() {
        assert!(matches!(
            decode(&[kind::DIR_GET, 4]),
            Err(DecodeError::BadValue { .. })
        ));
        assert!(matches!(
            decode(&[kind::DIR_GET, 3, 0]),
            Err(DecodeError::Truncated { .. })
        ));
        assert_eq!(
            decode(&[kind::DIR_GET, 0, 0]),
            Err(DecodeError::TrailingBytes(1))
        );
        assert!(matches!(
            decode(&[kind::DIR_ANSWER, 0, 0, 0, 0, 1]),
            Err(DecodeError::BadValue { .. })
        ));
        assert!(matches!(
            decode(&[kind::DIR_ANSWER, 3, 0, 0, 0, 0]),
            Err(DecodeError::BadValue { .. })
        ));
        assert!(matches!(
            decode(&[kind::DIR_CHUNK]),
            Err(DecodeError::BadValue { .. })
        ));
        let mut big = vec![kind::DIR_CHUNK];
        big.resize(MAX_DIR_CHUNK + 2, 7);
        assert!(matches!(decode(&big), Err(DecodeError::TooLong { .. })));
    }

    /// A hostile cache: an answer over the cap is refused at its head, before any byte of it
    /// is held; chunks first, past the length, or a second answer are refused too.
    #[test]
    fn hostile_answers_are_refused() {
        let mut d = DirDownload::new(100);
        assert_eq!(
            d.push(DirMsg::Answer {
                form: AnswerForm::Full,
                len: 101
            }),
            Err(DownloadError::TooLarge { len: 101, max: 100 })
        );
        let mut d = DirDownload::new(100);
        assert_eq!(
            d.push(DirMsg::Chunk(vec![1])),
            Err(DownloadError::ChunkFirst)
        );
        let mut d = DirDownload::new(100);
        d.push(DirMsg::Answer {
            form: AnswerForm::Full,
            len: 3,
        })
        .unwrap();
        assert_eq!(d.push(DirMsg::Chunk(vec![1, 2])), Ok(None));
        assert_eq!(d.progress(), (2, Some(3)));
        assert_eq!(
            d.push(DirMsg::Chunk(vec![3, 4])),
            Err(DownloadError::Overrun { len: 3 })
        );
        let mut d = DirDownload::new(100);
        d.push(DirMsg::Answer {
            form: AnswerForm::Diff,
            len: 1,
        })
        .unwrap();
        assert_eq!(
            d.push(DirMsg::Answer {
                form: AnswerForm::Diff,
                len: 1
            }),
            Err(DownloadError::Unexpected)
        );
        // An unavailable answer is whole at once, with no bytes.
        let mut d = DirDownload::new(100);
        assert_eq!(
            d.push(DirMsg::Answer {
                form: AnswerForm::Unavailable,
                len: 0
            }),
            Ok(Some(Download {
                form: AnswerForm::Unavailable,
                bytes: Vec::new()
            }))
        );
    }
}
