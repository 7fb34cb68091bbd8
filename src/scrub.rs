//! Removal of real secrets from what goes back to the agent: an upstream that echoes a credential (in a
//! header or the body) must not hand it to the agent. Every occurrence becomes the credential's placeholder.
//!
//! Bodies are scrubbed as they stream. Between chunks only the bytes that could begin a secret are held
//! back, never a fixed window, so a secret split across two chunks is caught without delaying SSE events.

use std::sync::Arc;

use aho_corasick::{AhoCorasick, MatchKind};
use bytes::Bytes;

/// Secrets shorter than this are not scrubbed: replacing every short common string would corrupt bodies, and
/// such a value is not a credential worth the name.
pub const MIN_SECRET_LEN: usize = 8;

/// A fixed set of secret → replacement pairs, with one automaton that finds any of them in one pass.
pub struct Scrubber {
    secrets: Vec<Vec<u8>>,
    replacements: Vec<Vec<u8>>,
    matcher: AhoCorasick,
}

impl Scrubber {
    /// `None` when no pair is long enough to scrub.
    pub fn new(pairs: impl IntoIterator<Item = (String, String)>) -> Option<Arc<Self>> {
        let (secrets, replacements): (Vec<Vec<u8>>, Vec<Vec<u8>>) = pairs
            .into_iter()
            .filter(|(secret, _)| secret.len() >= MIN_SECRET_LEN)
            .map(|(s, r)| (s.into_bytes(), r.into_bytes()))
            .unzip();
        if secrets.is_empty() {
            return None;
        }
        let matcher = AhoCorasick::builder()
            .match_kind(MatchKind::LeftmostLongest)
            .build(&secrets)
            .ok()?;
        Some(Arc::new(Self {
            secrets,
            replacements,
            matcher,
        }))
    }

    /// Whether `bytes` contain any of the secrets.
    pub fn found_in(&self, bytes: &[u8]) -> bool {
        self.matcher.is_match(bytes)
    }

    /// `input` with every secret replaced, and how many were.
    pub fn replace_all(&self, input: &[u8]) -> (Vec<u8>, usize) {
        let mut out = Vec::with_capacity(input.len());
        let mut pos = 0;
        let mut count = 0;
        for m in self.matcher.find_iter(input) {
            out.extend_from_slice(&input[pos..m.start()]);
            out.extend_from_slice(&self.replacements[m.pattern().as_usize()]);
            pos = m.end();
            count += 1;
        }
        out.extend_from_slice(&input[pos..]);
        (out, count)
    }

    /// The length of the longest suffix of `tail` that is the start of some secret (and could complete with
    /// the next chunk).
    fn partial_suffix(&self, tail: &[u8]) -> usize {
        let mut best = 0;
        for secret in &self.secrets {
            let most = (secret.len() - 1).min(tail.len());
            for k in (best + 1..=most).rev() {
                if tail[tail.len() - k..] == secret[..k] {
                    best = k;
                    break;
                }
            }
        }
        best
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

    /// The scrubbed bytes that can be sent now, and how many secrets were replaced.
    pub fn push(&mut self, chunk: &[u8]) -> (Bytes, usize) {
        let mut buf = std::mem::take(&mut self.held);
        buf.extend_from_slice(chunk);
        let mut out = Vec::with_capacity(buf.len());
        let mut pos = 0;
        let mut count = 0;
        for m in self.scrubber.matcher.find_iter(&buf) {
            out.extend_from_slice(&buf[pos..m.start()]);
            out.extend_from_slice(&self.scrubber.replacements[m.pattern().as_usize()]);
            pos = m.end();
            count += 1;
        }
        let keep = self.scrubber.partial_suffix(&buf[pos..]);
        out.extend_from_slice(&buf[pos..buf.len() - keep]);
        self.held = buf[buf.len() - keep..].to_vec();
        (Bytes::from(out), count)
    }

    /// What was held back, at the end of the body (it did not complete a secret).
    pub fn finish(&mut self) -> Bytes {
        Bytes::from(std::mem::take(&mut self.held))
    }
}

/// Scrubbers by scope (a route, or every credential for the canary), rebuilt only when the secret values
/// change (a rotation), so a request costs a few lookups and a hash, not an automaton build.
#[derive(Default)]
pub struct Cache {
    entries: std::sync::RwLock<std::collections::HashMap<String, Cached>>,
}

/// A fingerprint of the secret values and the scrubber built from them.
type Cached = (u64, Option<Arc<Scrubber>>);

impl Cache {
    pub fn get(&self, scope: &str, pairs: Vec<(String, String)>) -> Option<Arc<Scrubber>> {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        pairs.hash(&mut hasher);
        let fingerprint = hasher.finish();
        if let Some((seen, scrubber)) = self.entries.read().unwrap_or_else(|e| e.into_inner()).get(scope) {
            if *seen == fingerprint {
                return scrubber.clone();
            }
        }
        let scrubber = Scrubber::new(pairs);
        self.entries
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(scope.to_string(), (fingerprint, scrubber.clone()));
        scrubber
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scrubber() -> Arc<Scrubber> {
        Scrubber::new([
            ("sk-REAL-0123456789".to_string(), "kw-ph-openai".to_string()),
            ("short".into(), "x".into()),
        ])
        .unwrap()
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
            let rest = s.finish();
            let all = [a.as_ref(), b.as_ref(), rest.as_ref()].concat();
            assert_eq!(all, b"data: {\"echo\": \"kw-ph-openai\"}\n\n", "split at {split}");
            assert_eq!(n1 + n2, 1);
        }
    }

    #[test]
    fn nothing_is_held_back_when_no_secret_could_start_there() {
        let mut s = Stream::new(scrubber());
        let (out, _) = s.push(b"data: event 1\n\n");
        assert_eq!(
            out.as_ref(),
            b"data: event 1\n\n",
            "an SSE event goes out whole, at once"
        );
        let (out, _) = s.push(b"tail sk-RE");
        assert_eq!(out.as_ref(), b"tail ", "only a possible secret start waits");
        assert_eq!(s.finish().as_ref(), b"sk-RE");
    }
}
