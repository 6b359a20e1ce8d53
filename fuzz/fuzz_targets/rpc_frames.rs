//! A byte stream on `/otpmesh/rpc/1`: frames are read until the stream ends or a frame is refused;
//! no frame is longer than the bound, and nothing panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use otpmesh_node::rpc;
use otpmesh_protocol::wire::{self, MAX_REQUEST_BYTES};

fuzz_target!(|data: &[u8]| {
    let mut stream = data;
    futures::executor::block_on(async {
        while let Ok(Some((_id, body))) = rpc::read_frame(&mut stream, MAX_REQUEST_BYTES).await {
            assert!(body.len() <= MAX_REQUEST_BYTES);
            let _ = wire::decode_request(&body);
        }
    });
});
