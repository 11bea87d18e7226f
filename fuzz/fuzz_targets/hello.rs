//! Hello decoding must never panic, and an accepted hello re-encodes to the
//! bytes it came from.
#![no_main]

use anomos_common::hello::{Hello, HELLO_LEN};
use anomos_common::{Nid, PeerId};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok((hello, used)) = Hello::decode(data) {
        assert_eq!(used, HELLO_LEN);
        assert_eq!(&hello.encode()[..], &data[..HELLO_LEN]);
        assert!(hello.check(hello.peer, hello.nid).is_ok());
        let _ = hello.check(PeerId([0; 32]), Nid(0));
    }
});
