//! The bounded response decoder: for any data compressed as gzip (with fuzzer-chosen header fields) or zlib
//! and fed in any pieces, it gives back exactly the data, never more than one step's worth of output at once,
//! and on arbitrary (corrupt) input it errs or ends without a panic.
#![no_main]

use std::io::Write;

use bytes::Bytes;
use keyward::proxy::inflate::{Inflate, CHUNK};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (u8, Vec<u8>, Vec<u8>, bool)| {
    let (mode, data, cuts, corrupt) = input;
    let encoded = if corrupt {
        data.clone()
    } else if mode % 2 == 0 {
        let mut builder = flate2::GzBuilder::new();
        if mode & 2 != 0 {
            builder = builder.filename("f.txt");
        }
        if mode & 4 != 0 {
            builder = builder.comment("a comment");
        }
        if mode & 8 != 0 {
            builder = builder.extra(vec![1, 2, 3, 4]);
        }
        let mut e = builder.write(Vec::new(), flate2::Compression::fast());
        e.write_all(&data).unwrap();
        e.finish().unwrap()
    } else {
        let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(&data).unwrap();
        e.finish().unwrap()
    };
    let mut decoder = if mode % 2 == 0 { Inflate::gzip() } else { Inflate::zlib() };
    let mut out = Vec::new();
    let mut rest: &[u8] = &encoded;
    let mut cuts = cuts.into_iter();
    let result = (|| -> std::io::Result<()> {
        while !rest.is_empty() {
            let at = cuts.next().map_or(rest.len(), |c| (c as usize).clamp(1, rest.len()));
            let (piece, tail) = rest.split_at(at);
            rest = tail;
            decoder.feed(Bytes::copy_from_slice(piece));
            while decoder.has_input() {
                let step = decoder.step()?;
                assert!(step.len() <= CHUNK, "a step gave {} bytes", step.len());
                out.extend(step);
            }
        }
        decoder.finish()
    })();
    if !corrupt {
        result.expect("valid compressed data decodes");
        assert_eq!(out, data);
    }
});
