//! The configuration loader: `Config::parse` on arbitrary text.
//!
//! Properties:
//! * never panics; an error names the file it was given, and is one line;
//! * an accepted configuration respects every validated bound (the limits
//!   the server sizes its buffers and timers from);
//! * an accepted configuration written back with `Config::to_toml` parses to
//!   an equal configuration, and writing that again gives the same text;
//! * `ByteSize::parse` of any string: a value it accepts prints (Display)
//!   as a string that parses back to the same value.
#![no_main]

use clamsentry::config::{ByteSize, Config};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(size) = ByteSize::parse(&text) {
        assert_eq!(ByteSize::parse(&size.to_string()), Ok(size));
    }
    let config = match Config::parse(&text, "fuzz.toml") {
        Ok(c) => c,
        Err(e) => {
            assert!(e.to_string().starts_with("fuzz.toml"), "{e}");
            assert!(!e.to_string().contains('\n'), "{e}");
            return;
        }
    };
    let l = &config.limits;
    assert!((64..=1 << 20).contains(&l.max_command_length.0));
    assert!((1..=u64::from(u32::MAX)).contains(&l.stream_max_length.0));
    assert!((1..=1024).contains(&l.max_threads));
    assert!(l.max_queue >= 1 && l.max_connections >= 1 && l.max_session_commands >= 1);
    for t in [l.command_read_timeout, l.read_timeout, l.idle_timeout] {
        assert!((1..=86_400).contains(&t));
    }
    assert!(config.unix_mode() <= 0o777);

    let written = config
        .to_toml()
        .unwrap_or_else(|e| panic!("an accepted config cannot be written: {e}\n{config:?}"));
    let again = Config::parse(&written, "written.toml")
        .unwrap_or_else(|e| panic!("written config does not parse: {e}\n{written}"));
    assert_eq!(again, config, "written:\n{written}");
    assert_eq!(again.to_toml().as_deref(), Ok(written.as_str()));
});
