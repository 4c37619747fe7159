//! Bytes as the controller listener receives them on an RPC connection: a hello, then RPC
//! frames back to back, through the same checks as `controller::transport` (hello, length
//! bound before buffering, version, kind, CRC, then the JSON body of the kind's message).
//! Any bytes are refused with a typed error or decode; nothing panics, and no length taken
//! from the input allocates beyond the frame bound.
#![no_main]
use libfuzzer_sys::fuzz_target;
use shardlog_server::controller::rpc::{self, ForwardAnswer, ForwardReq, HELLO_LEN};

fuzz_target!(|data: &[u8]| {
    let Some(hello) = data.first_chunk::<HELLO_LEN>() else {
        return;
    };
    let _ = rpc::decode_hello(hello);
    let mut rest = &data[HELLO_LEN..];
    loop {
        match rpc::frame_len(rest) {
            Ok(Some(len)) => assert!(len <= rpc::RPC_HEADER + rpc::MAX_RPC_BODY),
            Ok(None) | Err(_) => return,
        }
        let (frame, used) = match rpc::decode_frame(rest) {
            Ok(Some(f)) => f,
            Ok(None) | Err(_) => return,
        };
        assert!(used <= rest.len() && used >= rpc::RPC_HEADER);
        if let Ok(req) = rpc::body::<ForwardReq>(&frame) {
            // A decoded request converts to the admin request the leader would run.
            let _ = req.into_admin();
        }
        if let Ok(a) = rpc::body::<ForwardAnswer>(&frame) {
            let _ = a.into_admin();
        }
        rest = &rest[used..];
    }
});
