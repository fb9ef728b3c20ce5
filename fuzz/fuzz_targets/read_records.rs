//! The records CSV reader, on arbitrary bytes (the file a site exports from its systems).
//!
//! Beyond "never panics": everything accepted is valid (non-empty unique local ids, every value
//! passes its element's check, line numbers grow), and an error is one line that never repeats
//! a field value other than the local id (checked for the values of accepted rows, which the
//! fuzzer can steer into error messages of later rows).
#![no_main]

use libfuzzer_sys::fuzz_target;
use ttp_agent::submit::{read_records_from, validate_value};

fuzz_target!(|data: &[u8]| {
    match read_records_from(data, "fuzz.csv") {
        Ok(records) => {
            let mut ids = std::collections::HashSet::new();
            let mut last_line = 1;
            for r in &records {
                assert!(!r.local_id.is_empty() && r.local_id.trim() == r.local_id);
                assert!(ids.insert(r.local_id.clone()), "duplicate id accepted");
                assert!(r.line > last_line, "lines {last_line} then {}", r.line);
                last_line = r.line;
                for (element, value) in &r.idat.0 {
                    assert!(!value.is_empty());
                    assert!(validate_value(*element, value).is_ok());
                }
            }
        }
        Err(e) => {
            let message = e.to_string();
            assert!(message.starts_with("fuzz.csv: "), "{message}");
            assert!(!message.contains('\n'), "{message:?}");
        }
    }
});
