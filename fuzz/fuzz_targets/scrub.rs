//! Streaming scrubbing must give exactly what one-shot replacement gives, however the body is cut into chunks.
#![no_main]

use keyward::scrub::{Scrubber, Stream};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (Vec<u8>, Vec<u8>)| {
    let (body, cuts) = input;
    let scrubber = Scrubber::new([
        ("sk-REAL-aaaaaaaa".to_string(), "kw-one".to_string()),
        ("sk-REAL-aaaabbbb".to_string(), "kw-two".to_string()),
        ("aaaaaaaaaaaa".to_string(), "kw-three".to_string()),
    ])
    .unwrap();
    let (expected, _) = scrubber.replace_all(&body);
    let mut stream = Stream::new(scrubber);
    let mut out = Vec::new();
    let mut rest: &[u8] = &body;
    for cut in cuts {
        let at = (cut as usize).min(rest.len());
        let (chunk, tail) = rest.split_at(at);
        out.extend_from_slice(&stream.push(chunk).0);
        rest = tail;
    }
    out.extend_from_slice(&stream.push(rest).0);
    out.extend_from_slice(&stream.finish());
    assert_eq!(out, expected);
});
