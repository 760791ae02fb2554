//! Fuzzes the `[package.metadata.cluster]` reader (src/config.rs) with whole Cargo.toml texts:
//! parsed as cargo would, handed over as JSON, read; errors point into the same text. No input
//! may panic.
#![no_main]

use std::sync::OnceLock;

use cargo_adapt_push::config::{ClusterConfig, Origin};
use libfuzzer_sys::fuzz_target;

fn dir() -> &'static std::path::Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().expect("temp dir"))
        .path()
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let manifest = dir().join("Cargo.toml");
    if std::fs::write(&manifest, text).is_err() {
        return;
    }
    let Ok(doc) = toml::from_str::<toml::Value>(text) else {
        return;
    };
    let Ok(json) = serde_json::to_value(&doc) else {
        return;
    };
    for (table, origin) in [
        (
            &json["package"]["metadata"]["cluster"],
            Origin::package(&manifest),
        ),
        (
            &json["workspace"]["metadata"]["cluster"],
            Origin::workspace(&manifest),
        ),
    ] {
        if let Err(e) = ClusterConfig::from_table(table, &origin) {
            assert!(!e.to_string().is_empty());
        }
    }
});
