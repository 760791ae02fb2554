//! Fuzzes the registry address and image reference grammar (src/reference/): no input may
//! panic, and a reference that parses must print as something that parses to the same text
//! (for registries that cannot be mistaken for a Docker Hub namespace).
#![no_main]

use cargo_adapt_push::reference::{Digest, ImageRef, Registry, RegistryLocation, Repository, Tag};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let input = String::from_utf8_lossy(data);
    let input = input.as_ref();
    let _ = Registry::parse(input);
    let _ = Repository::parse(input);
    let _ = Tag::parse(input);
    let _ = Digest::parse(input);
    if let Ok(location) = RegistryLocation::parse(input) {
        let printed = location.to_string();
        let again = RegistryLocation::parse(&printed).expect("a printed location parses");
        assert_eq!(again.to_string(), printed);
        let _ = location.repository("x/y");
    }
    if let Ok(image) = ImageRef::parse(input) {
        // A host without a dot, a port or `localhost` (`R/x` reads `R` as a host because of
        // its uppercase) prints as a Docker Hub namespace: only unambiguous ones must round-trip.
        let printed = image.to_string();
        let authority = image.registry.authority();
        if authority.contains(['.', ':', '[']) || authority == "localhost" {
            let again = ImageRef::parse(&printed).expect("a printed reference parses");
            assert_eq!(again.to_string(), printed);
        }
        let _ = image.reference();
    }
});
