//! A control line on a node's stdin: parsed or refused; what parses prints back to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use otpmesh_node::control::ControlLine;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(line) = ControlLine::parse(text) {
            assert_eq!(ControlLine::parse(&line.to_line()).ok(), Some(line));
        }
    }
});
