use super::*;
use crate::crypto::X25519Secret;

fn vector_inputs(n: usize, tag: u8) -> (Vec<X25519Secret>, Vec<[u8; 32]>, Vec<u8>, Vec<HopSpec>, ExitPayload) {
    let secrets: Vec<X25519Secret> = (0..n).map(|i| X25519Secret::from_bytes([tag + 0x10 + i as u8; 32]).expect("key")).collect();
    let eph: Vec<[u8; 32]> = (0..n).map(|i| [tag + 0x20 + i as u8; 32]).collect();
    let padding: Vec<u8> = (0..(MAX_HOPS - n) * BLOCK_LEN).map(|j| (j as u8).wrapping_mul(7).wrapping_add(tag)).collect();
    let hops = secrets.iter().enumerate().map(|(i, k)| HopSpec { onion_public: k.public(), next_nid: (i + 1 < n).then_some(Nid(0x0102 + 0x0202 * i as u16)) }).collect();
    let payload = ExitPayload { infohash: InfoHash([0xab; 32]), circuit_secret: CircuitSecret([0xcd; 32]), expiry: 1_700_000_600 };
    (secrets, eph, padding, hops, payload)
}

fn wrap(k: &str, bytes: &[u8]) {
    let h = hex::encode(bytes);
    let mut first = true;
    for chunk in h.as_bytes().chunks(64) {
        let c = std::str::from_utf8(chunk).expect("utf8");
        if first { println!("{k} = {c}"); first = false; } else { println!("    {c}"); }
    }
}

#[test]
fn gen() {
    for (n, tag) in [(3usize, 0u8), (1, 0x40)] {
        let (secrets, eph, padding, hops, payload) = vector_inputs(n, tag);
        let built = build_with(&eph, &padding, &hops, &payload).expect("build");
        println!("---- {n}");
        for (i, k) in secrets.iter().enumerate() { wrap(&format!("hop{i}_secret"), &k.to_bytes()); wrap(&format!("hop{i}_public"), &k.public()); }
        for (i, e) in eph.iter().enumerate() { wrap(&format!("ephemeral{i}"), e); }
        wrap("padding", &padding);
        for (i, h) in hops.iter().enumerate() { if let Some(nid) = h.next_nid { println!("hop{i}_next_nid = {}", nid.0); } }
        wrap("infohash", &payload.infohash.0);
        wrap("circuit_secret", &payload.circuit_secret.0);
        println!("expiry = {}", payload.expiry);
        let mut code = built.code.clone();
        for (i, k) in secrets.iter().enumerate() {
            wrap(&format!("code{i}"), code.as_bytes());
            let s = k.agree(&code.alpha()).expect("agree");
            if i == 0 {
                wrap("hop0_shared", &s.0);
                let mut okm = [0u8; 220];
                crate::crypto::hkdf_sha256(b"anomos-onion-v1", &s.0, b"keys", &mut okm).expect("hkdf");
                wrap("hop0_okm", &okm);
            }
            let mut c = crate::replay::ReplayCache::new(2);
            match peel(k, &code, 1_700_000_000, &mut c).expect("peel") {
                Peeled::Relay { next_code, layer_keys, .. } => { wrap(&format!("hop{i}_forward"), &layer_keys.forward); wrap(&format!("hop{i}_backward"), &layer_keys.backward); code = next_code; }
                Peeled::Exit { layer_keys, .. } => { wrap(&format!("hop{i}_forward"), &layer_keys.forward); wrap(&format!("hop{i}_backward"), &layer_keys.backward); }
            }
        }
    }
}
