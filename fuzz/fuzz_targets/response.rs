//! A response body on its way to the agent, as the proxy scrubs it: every form Keyward writes a secret in
//! (`credentials::forms`) of a secret with characters that the forms spell differently (`/+= "`), embedded at
//! fuzzer-chosen offsets, pushed in fuzzer-chosen chunks with flushes (the proxy's release after upstream
//! silence) wherever the fuzzer puts them.
//!
//! Properties: no form survives in the output unless a flush fell inside it (the documented limit); the output
//! is exactly the one-shot scrubbing of each stretch between flushes; the bytes held back never exceed the
//! longest form less one, nor anything before the last newline; a flush releases everything.
//!
//! Replacements keep each form's length (`*` repeated), so output positions are input positions and what is
//! held back is exactly input pushed less output received.
#![no_main]

use std::sync::{Arc, OnceLock};

use keyward::scrub::{Scrubber, Stream};
use libfuzzer_sys::fuzz_target;

/// No form of it overlaps itself or another form (no prefix of one is a suffix of another), so every
/// occurrence in the input is replaced unless a flush cuts it.
const SECRET: &str = "sk/REAL+SECRET= \"q\"-9a1f";

struct Setup {
    forms: Vec<Vec<u8>>,
    scrubber: Arc<Scrubber>,
    longest: usize,
}

fn setup() -> &'static Setup {
    static SETUP: OnceLock<Setup> = OnceLock::new();
    SETUP.get_or_init(|| {
        let forms = keyward::credentials::forms(SECRET);
        assert_eq!(
            forms.len(),
            5,
            "raw, percent-encoded, + for space, JSON-escaped (serde; PHP's `\\/`)"
        );
        let pairs: Vec<(Vec<u8>, Arc<[u8]>)> = forms
            .iter()
            .map(|f| (f.clone(), Arc::from(vec![b'*'; f.len()])))
            .collect();
        let longest = forms.iter().map(Vec::len).max().unwrap();
        Setup {
            scrubber: Arc::new(Scrubber::new(pairs).unwrap()),
            forms,
            longest,
        }
    })
}

/// Start offsets of every occurrence of any form in `bytes`, with the form's length.
fn occurrences<'a>(forms: &'a [Vec<u8>], bytes: &'a [u8]) -> impl Iterator<Item = (usize, usize)> + 'a {
    forms.iter().flat_map(move |f| {
        bytes
            .windows(f.len())
            .enumerate()
            .filter(move |(_, w)| *w == f.as_slice())
            .map(move |(at, _)| (at, f.len()))
    })
}

/// Filler bytes; forms to insert (offset, which form); pushes (how many bytes, then flush or not).
type Input = (Vec<u8>, Vec<(u16, u8)>, Vec<(u8, bool)>);

fuzz_target!(|input: Input| {
    let (filler, inserts, ops) = input;
    let Setup {
        forms,
        scrubber,
        longest,
    } = setup();
    if filler.len() > 8 * 1024 || inserts.len() > 64 {
        return;
    }
    let mut body = filler;
    for (offset, which) in inserts {
        let form = &forms[usize::from(which) % forms.len()];
        let at = usize::from(offset) % (body.len() + 1);
        body.splice(at..at, form.iter().copied());
    }

    let mut stream = Stream::new(scrubber.clone());
    let mut out: Vec<u8> = Vec::with_capacity(body.len());
    // Where each stretch between flushes starts, in input (= output) positions.
    let mut flushes = vec![0usize];
    let mut pushed = 0;
    let mut ops = ops.into_iter();
    loop {
        let (take, flush) = match ops.next() {
            Some((take, flush)) => (usize::from(take).min(body.len() - pushed), flush),
            None => (body.len() - pushed, true),
        };
        let (chunk, _) = stream.push(&body[pushed..pushed + take]);
        out.extend_from_slice(&chunk);
        pushed += take;
        let start = *flushes.last().unwrap();
        let held = pushed - out.len();
        assert!(held < *longest, "held {held} bytes, longest form {longest}");
        assert_eq!(stream.holding(), held > 0);
        if let Some(newline) = body[start..pushed].iter().rposition(|&b| b == b'\n') {
            assert!(out.len() > start + newline, "bytes before a newline were held back");
        }
        if flush {
            let (rest, _) = stream.flush();
            out.extend_from_slice(&rest);
            assert_eq!(out.len(), pushed, "a flush releases everything");
            assert!(!stream.holding());
            if flushes.last() != Some(&pushed) {
                flushes.push(pushed);
            }
        }
        if pushed == body.len() && flush {
            break;
        }
    }
    assert_eq!(out.len(), body.len());

    // Each stretch between flushes comes out exactly as scrubbing it in one go would give.
    for pair in flushes.windows(2) {
        let (expected, _) = scrubber.replace_all(&body[pair[0]..pair[1]]);
        assert_eq!(out[pair[0]..pair[1]], expected[..], "stretch {}..{}", pair[0], pair[1]);
    }
    // A form left in the output must have been cut by a flush.
    for (at, len) in occurrences(forms, &out) {
        assert!(
            flushes.iter().any(|&f| at < f && f < at + len),
            "a form of the secret at {at} came out whole with no flush inside it"
        );
    }
});
