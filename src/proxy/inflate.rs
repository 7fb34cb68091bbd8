//! A gzip / zlib decoder that produces at most [`CHUNK`] bytes per step, so a response body is inflated only
//! as fast as the agent reads it. Inflating a whole socket read at once let a 2 MB gzip of zeros take 512 MB.
//! A body whose output outgrows its input by more than [`MAX_RATIO`] is cut off with an error: no real API
//! response compresses that well, a decompression bomb does.

use std::io;

use bytes::{Buf, Bytes};
use flate2::{Decompress, FlushDecompress, Status};

/// Most output produced per step.
pub const CHUNK: usize = 64 * 1024;
/// Largest output / input ratio accepted once the output passes [`RATIO_AFTER`].
pub const MAX_RATIO: u64 = 256;
const RATIO_AFTER: u64 = 1024 * 1024;
/// A gzip header longer than this (file name, comment, extra field) is refused.
const MAX_GZIP_HEADER: usize = 64 * 1024;

pub struct Inflate {
    state: State,
    input: Bytes,
    total_in: u64,
    total_out: u64,
}

enum State {
    /// Gzip only: header bytes seen so far.
    Header(Vec<u8>),
    Body(Box<Decompress>),
    /// The compressed stream ended; anything after it (the gzip trailer, trailing garbage) is dropped.
    Done,
}

fn corrupt(why: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("compressed response body: {why}"))
}

impl Inflate {
    /// `Content-Encoding: gzip` (RFC 1952).
    pub fn gzip() -> Self {
        Self::with(State::Header(Vec::new()))
    }

    /// `Content-Encoding: deflate`, which HTTP defines as the zlib format (RFC 1950).
    pub fn zlib() -> Self {
        Self::with(State::Body(Box::new(Decompress::new(true))))
    }

    fn with(state: State) -> Self {
        Self {
            state,
            input: Bytes::new(),
            total_in: 0,
            total_out: 0,
        }
    }

    /// Whether input is waiting to be decoded; feed more only when it is not.
    pub fn has_input(&self) -> bool {
        !self.input.is_empty()
    }

    pub fn feed(&mut self, data: Bytes) {
        debug_assert!(self.input.is_empty());
        if matches!(self.state, State::Done) {
            return;
        }
        self.total_in += data.len() as u64;
        self.input = data;
    }

    /// Decodes from the pending input, producing at most [`CHUNK`] bytes (possibly none, after a header).
    pub fn step(&mut self) -> io::Result<Vec<u8>> {
        match &mut self.state {
            State::Done => {
                self.input.clear();
                Ok(Vec::new())
            }
            State::Header(seen) => {
                let take = self
                    .input
                    .len()
                    .min(MAX_GZIP_HEADER + 1 - seen.len().min(MAX_GZIP_HEADER));
                seen.extend_from_slice(&self.input[..take]);
                match gzip_header_len(seen)? {
                    Some(len) => {
                        let rest = Bytes::copy_from_slice(&seen[len..]);
                        self.input.advance(take);
                        let mut input = rest;
                        if !self.input.is_empty() {
                            let mut joined = input.to_vec();
                            joined.extend_from_slice(&self.input);
                            input = Bytes::from(joined);
                        }
                        self.input = input;
                        self.state = State::Body(Box::new(Decompress::new(false)));
                    }
                    None if seen.len() > MAX_GZIP_HEADER => return Err(corrupt("gzip header too long")),
                    None => self.input.advance(take),
                }
                Ok(Vec::new())
            }
            State::Body(d) => {
                let mut out = Vec::with_capacity(CHUNK);
                let before = d.total_in();
                let status = d
                    .decompress_vec(&self.input, &mut out, FlushDecompress::None)
                    .map_err(|_| corrupt("invalid deflate data"))?;
                let consumed = (d.total_in() - before) as usize;
                if consumed == 0 && out.is_empty() && status != Status::StreamEnd {
                    return Err(corrupt("the decoder made no progress"));
                }
                self.input.advance(consumed);
                if status == Status::StreamEnd {
                    self.state = State::Done;
                    self.input.clear();
                }
                self.total_out += out.len() as u64;
                if self.total_out > RATIO_AFTER && self.total_out > MAX_RATIO * self.total_in.max(1) {
                    return Err(corrupt(&format!(
                        "it inflates more than {MAX_RATIO}:1 (a decompression bomb?)"
                    )));
                }
                Ok(out)
            }
        }
    }

    /// At the end of the body: the compressed stream must have ended too, unless the body was empty (a 204,
    /// a 304 or a HEAD answer labelled gzip).
    pub fn finish(&self) -> io::Result<()> {
        match self.state {
            State::Done => Ok(()),
            _ if self.total_in == 0 => Ok(()),
            _ => Err(corrupt("truncated")),
        }
    }
}

/// The length of a complete gzip header at the start of `b`, `None` if more bytes are needed.
fn gzip_header_len(b: &[u8]) -> io::Result<Option<usize>> {
    const FHCRC: u8 = 2;
    const FEXTRA: u8 = 4;
    const FNAME: u8 = 8;
    const FCOMMENT: u8 = 16;
    if b.len() < 10 {
        return Ok(None);
    }
    if b[0] != 0x1f || b[1] != 0x8b || b[2] != 8 {
        return Err(corrupt("not gzip"));
    }
    let flags = b[3];
    let mut at = 10;
    if flags & FEXTRA != 0 {
        let Some(len) = b.get(at..at + 2) else { return Ok(None) };
        at += 2 + usize::from(u16::from_le_bytes([len[0], len[1]]));
    }
    for flag in [FNAME, FCOMMENT] {
        if flags & flag != 0 {
            match b.get(at..).and_then(|rest| rest.iter().position(|&c| c == 0)) {
                Some(zero) => at += zero + 1,
                None => return Ok(None),
            }
        }
    }
    if flags & FHCRC != 0 {
        at += 2;
    }
    Ok((b.len() >= at).then_some(at))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::GzBuilder::new()
            .filename("name.txt")
            .comment("c")
            .extra(vec![1, 2, 3])
            .write(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn decode(mut d: Inflate, encoded: &[u8], piece: usize) -> io::Result<(Vec<u8>, usize)> {
        let mut out = Vec::new();
        let mut largest = 0;
        for chunk in encoded.chunks(piece) {
            d.feed(Bytes::copy_from_slice(chunk));
            while d.has_input() {
                let o = d.step()?;
                largest = largest.max(o.len());
                out.extend(o);
            }
        }
        d.finish()?;
        Ok((out, largest))
    }

    #[test]
    fn gzip_with_every_header_field_decodes_in_any_pieces() {
        let text: Vec<u8> = b"hello world ".iter().copied().cycle().take(100_000).collect();
        let encoded = gzip(&text);
        for piece in [1, 3, 10, 11, 4096, encoded.len()] {
            let (out, largest) = decode(Inflate::gzip(), &encoded, piece).unwrap();
            assert_eq!(out, text, "pieces of {piece}");
            assert!(largest <= CHUNK);
        }
    }

    #[test]
    fn zlib_decodes_and_truncation_is_an_error() {
        let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(b"some deflated text").unwrap();
        let encoded = e.finish().unwrap();
        assert_eq!(decode(Inflate::zlib(), &encoded, 5).unwrap().0, b"some deflated text");
        assert!(decode(Inflate::zlib(), &encoded[..encoded.len() - 3], 5).is_err());
        assert!(decode(Inflate::gzip(), &encoded, 5).is_err(), "mislabelled");
        assert!(Inflate::gzip().finish().is_ok(), "an empty body is not a truncated one");
    }

    #[test]
    fn a_bomb_is_cut_off_with_bounded_steps() {
        let encoded = gzip(&vec![0u8; 64 * 1024 * 1024]);
        let err = decode(Inflate::gzip(), &encoded, 16 * 1024).unwrap_err();
        assert!(err.to_string().contains("256:1"), "{err}");
    }
}
