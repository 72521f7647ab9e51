#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| derain_fuzz::targets::footage_video(data));
