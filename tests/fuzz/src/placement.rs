//! The placement group's frames: what a peer's Raft or a forwarding node sends, what it answers,
//! and the snapshots a leader installs on followers.

use futures::io::Cursor;
use mycel_mesh::{MAX_PLACEMENT_FRAME_BYTES, PlacementFrame, codec::read_frame};
use mycel_placement::{PlacementState, fuzzing};

/// Bytes as the mesh hands them to the placement group: first as a whole placement-protocol
/// frame (the mesh's envelope around the group's own), then as the group's frame itself, as an
/// answer, and as the data of a snapshot.
pub fn placement(data: &[u8]) {
    let state = PlacementState::default();
    let signer = super::key(5);
    let signer = Some(&signer);
    if let Ok(PlacementFrame(inner)) = futures::executor::block_on(read_frame::<PlacementFrame, _>(
        &mut Cursor::new(data),
        MAX_PLACEMENT_FRAME_BYTES,
    )) {
        let _ = fuzzing::rpc(&inner, &state, signer);
        let _ = fuzzing::reply(&inner);
    }
    let _ = fuzzing::rpc(data, &state, signer);
    let _ = fuzzing::reply(data);
    let _ = fuzzing::snapshot(data);
}

pub fn seeds() -> Vec<(&'static str, String, Vec<u8>)> {
    let mut out = Vec::new();
    for (name, _, bytes) in fuzzing::samples() {
        let framed = mycel_protocol::encode(&PlacementFrame(bytes.clone())).expect("encodes");
        out.push(("placement", name.to_string(), bytes));
        out.push(("placement", format!("{name}-framed"), framed));
    }
    out
}
