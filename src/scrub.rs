//! Removal of real secrets from what goes back to the agent: an upstream that echoes a credential (in a
//! header or the body) must not hand it to the agent. Every occurrence becomes the credential's placeholder.
//!
//! Bodies are scrubbed as they stream. Between chunks a fixed number of bytes (the longest pattern less one)
//! is held back whatever they contain, so a secret split across two chunks is caught. The amount must not
//! depend on the secret: holding back exactly the bytes that could begin a secret told an upstream that
//! reflects agent-chosen bytes (a model repeating the agent's text, token by token) whether they were a prefix
//! of the secret, one character at a time. Two content-independent rules keep streams prompt: everything up
//! to the last newline goes out at once (no secret form contains one, so none can span it; SSE events and
//! JSON lines end with one), and whoever drives the stream releases the held bytes after [`RELEASE_AFTER`] of
//! silence from the upstream.
//!
//! The matcher is a contiguous NFA: its build cost is linear in the patterns' total length. A DFA build for a
//! 64 KB secret froze a worker thread for minutes.

use std::sync::Arc;
use std::time::Duration;

use aho_corasick::{AhoCorasick, AhoCorasickKind, MatchKind};
use bytes::Bytes;

/// Secrets shorter than this are not scrubbed: replacing every short common string would corrupt bodies, and
/// such a value is not a credential worth the name.
pub const MIN_SECRET_LEN: usize = 8;

/// How long held-back bytes wait for the rest of a possible secret before they are sent anyway. A secret split
/// by an upstream pausing longer than this in the middle of it is not caught (SECURITY.md); TCP delivers the
/// segments of one write well within it.
pub const RELEASE_AFTER: Duration = Duration::from_millis(100);

/// A fixed set of pattern → replacement pairs, with one automaton that finds any of them in one pass.
pub struct Scrubber {
    replacements: Vec<Arc<[u8]>>,
    matcher: AhoCorasick,
    longest: usize,
    /// `\n`, unless some pattern contains it: no match can span it, so a stream can be released up to it.
    boundary: Option<u8>,
}

impl Scrubber {
    /// `None` when no pattern is long enough to scrub.
    pub fn new(pairs: impl IntoIterator<Item = (Vec<u8>, Arc<[u8]>)>) -> Option<Self> {
        let (patterns, replacements): (Vec<Vec<u8>>, Vec<Arc<[u8]>>) =
            pairs.into_iter().filter(|(p, _)| p.len() >= MIN_SECRET_LEN).unzip();
        let longest = patterns.iter().map(Vec::len).max()?;
        let boundary = (!patterns.iter().any(|p| p.contains(&b'\n'))).then_some(b'\n');
        // ASCII case is ignored: header names arrive lower-cased, percent-escapes come in either case, and an
        // upstream that changes a secret's case has not made it safe.
        let matcher = AhoCorasick::builder()
            .match_kind(MatchKind::LeftmostLongest)
            .kind(Some(AhoCorasickKind::ContiguousNFA))
            .ascii_case_insensitive(true)
            .build(&patterns)
            .ok()?;
        Some(Self {
            replacements,
            matcher,
            longest,
            boundary,
        })
    }

    /// Whether `bytes` contain any of the patterns.
    pub fn found_in(&self, bytes: &[u8]) -> bool {
        self.matcher.is_match(bytes)
    }

    /// `input` with every pattern replaced, and how many were.
    pub fn replace_all(&self, input: &[u8]) -> (Vec<u8>, usize) {
        let mut out = Vec::with_capacity(input.len());
        let (end, count) = self.replace_into(input, input.len(), &mut out);
        out.extend_from_slice(&input[end..]);
        (out, count)
    }

    /// Replaces the matches of `input` that start before `limit`, writing everything up to the end of the last
    /// one (or up to `limit`) into `out`. Returns where it stopped and how many were replaced.
    fn replace_into(&self, input: &[u8], limit: usize, out: &mut Vec<u8>) -> (usize, usize) {
        let mut pos = 0;
        let mut count = 0;
        for m in self.matcher.find_iter(input) {
            if m.start() >= limit {
                break;
            }
            out.extend_from_slice(&input[pos..m.start()]);
            out.extend_from_slice(&self.replacements[m.pattern().as_usize()]);
            pos = m.end();
            count += 1;
        }
        let end = pos.max(limit);
        out.extend_from_slice(&input[pos..end]);
        (end, count)
    }
}

/// Scrubbing state across the chunks of one body.
pub struct Stream {
    scrubber: Arc<Scrubber>,
    held: Vec<u8>,
}

impl Stream {
    pub fn new(scrubber: Arc<Scrubber>) -> Self {
        Self {
            scrubber,
            held: Vec::new(),
        }
    }

    /// The scrubbed bytes that can be sent now, and how many secrets were replaced. The last `longest - 1`
    /// bytes are held back whatever they are: fewer only after a newline, or when a replaced secret ends
    /// inside them.
    pub fn push(&mut self, chunk: &[u8]) -> (Bytes, usize) {
        let mut buf = std::mem::take(&mut self.held);
        buf.extend_from_slice(chunk);
        let hold = self.scrubber.longest - 1;
        // A match starting before `cut` ends within `buf`: no longer pattern can need bytes not yet here, and
        // none contains the boundary.
        let after_boundary = self
            .scrubber
            .boundary
            .and_then(|b| buf.iter().rposition(|&c| c == b))
            .map_or(0, |at| at + 1);
        let cut = buf.len().saturating_sub(hold).max(after_boundary);
        let mut out = Vec::with_capacity(buf.len());
        let (end, count) = self.scrubber.replace_into(&buf, cut, &mut out);
        buf.drain(..end);
        self.held = buf;
        (Bytes::from(out), count)
    }

    /// Whether bytes are held back, waiting for the next chunk or [`Stream::flush`].
    pub fn holding(&self) -> bool {
        !self.held.is_empty()
    }

    /// Releases what is held back (no more data is coming soon, or the body ended), and how many secrets were
    /// replaced in it.
    pub fn flush(&mut self) -> (Bytes, usize) {
        let held = std::mem::take(&mut self.held);
        let (out, count) = self.scrubber.replace_all(&held);
        (Bytes::from(out), count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(secret: &str, placeholder: &str) -> (Vec<u8>, Arc<[u8]>) {
        (secret.as_bytes().to_vec(), Arc::from(placeholder.as_bytes()))
    }

    fn scrubber() -> Arc<Scrubber> {
        Arc::new(Scrubber::new([pair("sk-REAL-0123456789", "kw-ph-openai"), pair("short", "x")]).unwrap())
    }

    #[test]
    fn replaces_whole_values_and_skips_short_ones() {
        let (out, n) = scrubber().replace_all(b"key=sk-REAL-0123456789; short stays");
        assert_eq!(out, b"key=kw-ph-openai; short stays");
        assert_eq!(n, 1);
    }

    #[test]
    fn a_secret_split_across_chunks_is_caught_at_every_split_point() {
        let body = b"data: {\"echo\": \"sk-REAL-0123456789\"}\n\n";
        for split in 0..=body.len() {
            let mut s = Stream::new(scrubber());
            let (a, n1) = s.push(&body[..split]);
            let (b, n2) = s.push(&body[split..]);
            let (rest, n3) = s.flush();
            let all = [a.as_ref(), b.as_ref(), rest.as_ref()].concat();
            assert_eq!(all, b"data: {\"echo\": \"kw-ph-openai\"}\n\n", "split at {split}");
            assert_eq!(n1 + n2 + n3, 1);
        }
    }

    #[test]
    fn the_amount_held_back_does_not_depend_on_the_content() {
        // The prefix oracle: an upstream reflecting agent-chosen bytes must not reveal whether they begin the
        // secret by what is held back.
        let secret = "sk-REAL-0123456789";
        for guess in ["sk-REAL-0", "sk-REAL-X", "zzzzzzzzz", "s", ""] {
            let mut s = Stream::new(scrubber());
            let body = format!("data: 0123456789012345678901234567890123456789 {guess}");
            let (out, _) = s.push(body.as_bytes());
            assert_eq!(out.len(), body.len() - (secret.len() - 1), "guess {guess:?}");
            assert!(s.holding());
        }
    }

    #[test]
    fn complete_lines_go_out_at_once() {
        let mut s = Stream::new(scrubber());
        let (out, _) = s.push(b"data: {\"a\": 1}\n\n");
        assert_eq!(out.as_ref(), b"data: {\"a\": 1}\n\n", "an SSE event is not delayed");
        assert!(!s.holding());
        let (out, _) = s.push(b"data: sk-REAL-0123456789\n\ndata: sk-REAL-01");
        assert_eq!(out.as_ref(), b"data: kw-ph-openai\n\n");
        assert_eq!(s.push(b"23456789\n").0.as_ref(), b"data: kw-ph-openai\n");
    }

    #[test]
    fn case_variants_are_caught() {
        let (out, n) = scrubber().replace_all(b"SK-real-0123456789 and sk-REAL-0123456789");
        assert_eq!((out.as_slice(), n), (&b"kw-ph-openai and kw-ph-openai"[..], 2));
    }

    #[test]
    fn build_cost_is_bounded_for_a_large_secret() {
        let big: String = (0..16 * 1024).map(|i| char::from(b'a' + (i % 26) as u8)).collect();
        let started = std::time::Instant::now();
        let s = Scrubber::new([pair(&big, "kw-big")]).unwrap();
        assert!(s.found_in(format!("xx{big}yy").as_bytes()));
        assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
    }
}
