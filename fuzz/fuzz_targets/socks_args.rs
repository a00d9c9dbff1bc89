//! `parse_socks_args` on arbitrary username/password splits, then `BridgeArgs::from_pairs`.
//!
//! Properties: nothing panics; parsed pairs survive tor's encoding (`encode_socks_args` +
//! `split_for_socks`) and parse back unchanged; usable bridge arguments survive their canonical
//! form (`to_pairs`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use water_pt::pt::args::{encode_socks_args, parse_socks_args, split_for_socks};
use water_pt::pt::bridge::BridgeArgs;

fuzz_target!(|data: &[u8]| {
    // The first two bytes choose where the username ends; tor cuts at byte 255, but a hostile
    // local client may cut anywhere.
    let Some((cut, rest)) = data.split_first_chunk::<2>() else {
        return;
    };
    let cut = usize::from(u16::from_le_bytes(*cut)) % (rest.len() + 1);
    let (user, pass) = rest.split_at(cut);
    let Ok(pairs) = parse_socks_args(user, pass) else {
        return;
    };

    if let Ok(encoded) = encode_socks_args(&pairs) {
        let (u, p) = split_for_socks(encoded.as_bytes())
            .expect("re-encoding parsed arguments never makes them longer");
        let again = parse_socks_args(&u, &p).expect("re-encoded arguments parse");
        assert_eq!(again, pairs, "encoded as {encoded:?}");
    }

    if let Ok(args) = BridgeArgs::from_pairs(&pairs) {
        let canonical = args.to_pairs();
        assert_eq!(
            BridgeArgs::from_pairs(&canonical).as_ref(),
            Ok(&args),
            "canonical pairs {canonical:?}"
        );
    }
});
