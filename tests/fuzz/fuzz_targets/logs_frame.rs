#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mycel_fuzz::run("logs_frame", data));
