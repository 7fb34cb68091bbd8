//! Arbitrary configuration text: an error or a configuration, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: String| {
    let _ = keyward::config::Config::parse(std::path::Path::new("/fuzz/keyward.yaml"), text);
});
