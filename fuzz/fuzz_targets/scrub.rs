//! Streaming scrubbing must give exactly what one-shot replacement gives, however the body is cut into chunks.
#![no_main]

use std::sync::Arc;

use keyward::scrub::{Scrubber, Stream};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (Vec<u8>, Vec<u8>)| {
    let (body, cuts) = input;
    let pair = |secret: &str, placeholder: &str| (secret.as_bytes().to_vec(), Arc::from(placeholder.as_bytes()));
    let scrubber = Arc::new(
        Scrubber::new([
            pair("sk-REAL-aaaaaaaa", "kw-one"),
            pair("sk-REAL-aaaabbbb", "kw-two"),
            pair("aaaaaaaaaaaa", "kw-three"),
        ])
        .unwrap(),
    );
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
    out.extend_from_slice(&stream.flush().0);
    assert_eq!(out, expected);
});
