//! The control channel's wire format, apart from any connection (pure; tested on byte
//! buffers).
//!
//! A frame is a 4-byte big-endian length `n`, then `n` bytes: one kind byte and the payload.
//! Kind [`JSON`] carries one serde message ([`ClientMsg`] from the command, [`ServerMsg`] from
//! the daemon); kind [`DATA`] carries raw bytes: the CSV a `submit` streams to the daemon, the
//! output a command streams back. Raw bytes are never re-encoded, so the CSV reaches the
//! reader byte for byte.

use std::io::{Read, Write};

use serde::{Deserialize, Serialize};

use super::Request;

/// A frame holding one JSON message.
pub const JSON: u8 = 0;
/// A frame holding raw bytes.
pub const DATA: u8 = 1;

/// The largest frame accepted (kind byte included): raw chunks are written at most
/// [`DATA_CHUNK`] long, messages are small. A longer length is a broken or foreign peer.
pub const MAX_FRAME: usize = 1024 * 1024;

/// How much raw data one frame carries at most.
pub const DATA_CHUNK: usize = 64 * 1024;

/// The protocol version both sides must speak; a command and a daemon of different
/// versions refuse each other with a message that says so.
pub const VERSION: u32 = 1;

/// What the command sends.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "msg", rename_all = "snake_case")]
pub enum ClientMsg {
    /// The first message: what to do.
    Hello {
        version: u32,
        /// `$SUDO_USER` of the command, believed only when the peer is root or the daemon's
        /// own user (who could act without the daemon anyway), as `Actor::from_env` does.
        sudo_user: Option<String>,
        request: Request,
    },
    /// The end of the input stream (`submit`'s CSV).
    InputEnd,
    /// The command wrote and made final the output it was sent (file fsynced and renamed,
    /// standard output flushed).
    Committed,
    /// It could not: the daemon fails the command with this message and commits nothing.
    CommitFailed { message: String },
}

/// What the daemon sends.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "msg", rename_all = "snake_case")]
pub enum ServerMsg {
    /// Text for the command's standard output.
    Print { text: String },
    /// A line for the command's standard error.
    Note { line: String },
    /// Progress of a long step (`done` of `total` units of `what`).
    Progress { what: String, done: u64, total: u64 },
    /// The daemon waits for something before it can go on; the command shows it.
    Waiting { what: String },
    /// All output was sent: make it final and answer [`ClientMsg::Committed`].
    OutputEnd,
    /// The command finished with this exit status.
    Done { exit: u8 },
    /// The command failed: the message (one line, as `ttp-agent: error:` shows it) and the
    /// exit status (1, or 78 for a configuration problem).
    Failed { message: String, exit: u8 },
}

/// One frame, decoded.
#[derive(Debug)]
pub enum Frame<M> {
    Msg(M),
    Data(Vec<u8>),
}

/// Why a frame could not be read.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("the connection closed")]
    Closed,
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("malformed frame: {0}")]
    Malformed(String),
}

/// Writes one JSON frame.
pub fn write_msg<M: Serialize>(w: &mut dyn Write, msg: &M) -> std::io::Result<()> {
    let body = serde_json::to_vec(msg).map_err(std::io::Error::other)?;
    write_frame(w, JSON, &body)
}

/// Writes raw bytes as one or more data frames.
pub fn write_data(w: &mut dyn Write, mut bytes: &[u8]) -> std::io::Result<()> {
    while !bytes.is_empty() {
        let n = bytes.len().min(DATA_CHUNK);
        write_frame(w, DATA, &bytes[..n])?;
        bytes = &bytes[n..];
    }
    Ok(())
}

fn write_frame(w: &mut dyn Write, kind: u8, body: &[u8]) -> std::io::Result<()> {
    let len = u32::try_from(body.len() + 1)
        .ok()
        .filter(|n| *n as usize <= MAX_FRAME)
        .ok_or_else(|| std::io::Error::other("control frame too long"))?;
    w.write_all(&len.to_be_bytes())?;
    w.write_all(&[kind])?;
    w.write_all(body)
}

/// Reads one frame. A clean end of the stream before a frame starts is [`WireError::Closed`];
/// an end within a frame is an I/O error (`UnexpectedEof`).
pub fn read_frame<M: for<'de> Deserialize<'de>>(r: &mut dyn Read) -> Result<Frame<M>, WireError> {
    let mut len = [0u8; 4];
    let mut got = 0;
    while got < len.len() {
        match r.read(&mut len[got..]) {
            Ok(0) if got == 0 => return Err(WireError::Closed),
            Ok(0) => {
                return Err(WireError::Io(std::io::ErrorKind::UnexpectedEof.into()));
            }
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    let len = u32::from_be_bytes(len) as usize;
    if len == 0 || len > MAX_FRAME {
        return Err(WireError::Malformed(format!("frame length {len}")));
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body)?;
    let kind = body[0];
    body.remove(0);
    match kind {
        JSON => serde_json::from_slice(&body)
            .map(Frame::Msg)
            .map_err(|e| WireError::Malformed(format!("message: {e}"))),
        DATA => Ok(Frame::Data(body)),
        other => Err(WireError::Malformed(format!("frame kind {other}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_and_data_round_trip_and_data_is_chunked_unchanged() {
        let mut buf = Vec::new();
        write_msg(
            &mut buf,
            &ServerMsg::Progress {
                what: "encoding".into(),
                done: 3,
                total: 9,
            },
        )
        .unwrap();
        let data: Vec<u8> = (0..DATA_CHUNK * 2 + 7).map(|i| (i % 251) as u8).collect();
        write_data(&mut buf, &data).unwrap();
        write_msg(&mut buf, &ServerMsg::Done { exit: 0 }).unwrap();

        let mut r = buf.as_slice();
        match read_frame::<ServerMsg>(&mut r).unwrap() {
            Frame::Msg(m) => assert_eq!(
                m,
                ServerMsg::Progress {
                    what: "encoding".into(),
                    done: 3,
                    total: 9
                }
            ),
            Frame::Data(_) => panic!("expected a message"),
        }
        let mut back = Vec::new();
        let mut chunks = 0;
        loop {
            match read_frame::<ServerMsg>(&mut r).unwrap() {
                Frame::Data(d) => {
                    assert!(d.len() <= DATA_CHUNK);
                    chunks += 1;
                    back.extend(d);
                }
                Frame::Msg(m) => {
                    assert_eq!(m, ServerMsg::Done { exit: 0 });
                    break;
                }
            }
        }
        assert_eq!(chunks, 3);
        assert_eq!(back, data);
        assert!(matches!(
            read_frame::<ServerMsg>(&mut r),
            Err(WireError::Closed)
        ));
    }

    #[test]
    fn truncated_oversized_and_foreign_frames_are_errors_not_panics() {
        let mut buf = Vec::new();
        write_msg(&mut buf, &ServerMsg::OutputEnd).unwrap();
        let mut cut = &buf[..buf.len() - 1];
        assert!(matches!(
            read_frame::<ServerMsg>(&mut cut),
            Err(WireError::Io(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof
        ));
        let mut half_len: &[u8] = &[0, 0];
        assert!(matches!(
            read_frame::<ServerMsg>(&mut half_len),
            Err(WireError::Io(_))
        ));
        let huge = ((MAX_FRAME + 1) as u32).to_be_bytes();
        assert!(matches!(
            read_frame::<ServerMsg>(&mut huge.as_slice()),
            Err(WireError::Malformed(_))
        ));
        let mut foreign: &[u8] = &[0, 0, 0, 2, 7, 0];
        assert!(matches!(
            read_frame::<ServerMsg>(&mut foreign),
            Err(WireError::Malformed(_))
        ));
        // HTTP spoken at the socket by mistake.
        let mut http: &[u8] = b"GET / HTTP/1.1\r\n\r\n";
        assert!(read_frame::<ServerMsg>(&mut http).is_err());
    }
}
