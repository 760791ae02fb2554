//! Random inputs for the reference and config parsers, on stable Rust (the cargo-fuzz targets in
//! fuzz/ need nightly): a few thousand generated and mutated inputs each; none may panic, and
//! references that parse must print as something that parses back to the same text.
//!
//! The parsers come from the library crate. The seed is fixed for
//! reproducibility; set ADAPT_PUSH_TEST_SEED to explore others.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

use cargo_adapt_push::config::{self, ClusterConfig, Origin};
use cargo_adapt_push::reference::{Digest, ImageRef, Registry, RegistryLocation, Repository, Tag};

const ITERATIONS: usize = 4000;

fn rng() -> (StdRng, u64) {
    let seed = std::env::var("ADAPT_PUSH_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_ada9);
    (StdRng::seed_from_u64(seed), seed)
}

const REFERENCE_SEEDS: &[&str] = &[
    "localhost:5000/team/app:v1",
    "registry:5000/a/b@sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "[::1]:5000/x:latest",
    "ghcr.io/acme",
    "http://127.0.0.1:5001/a",
    "https://ghcr.io/acme/team/",
    "busybox",
    "library/debian:12",
    "docker.io/library/alpine:3.20@sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "a.b-c.d:65535/x__y/z.w:T_a.g-1",
];

/// Characters that matter to the grammar, plus some that must be rejected.
const ALPHABET: &[char] = &[
    'a', 'z', 'A', 'Z', '0', '9', '.', '-', '_', '_', ':', ':', '/', '/', '@', '[', ']', '%', '+',
    ' ', '\t', '\n', '\\', '"', '\'', '=', '#', '{', '}', 'é', 'ß', '\u{0}', '\u{202e}', '😀',
];

fn random_string(rng: &mut StdRng, max: usize) -> String {
    let len = rng.random_range(0..=max);
    (0..len)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())])
        .collect()
}

/// Inserts, deletes or replaces a few characters (on char boundaries).
fn mutate(rng: &mut StdRng, seed: &str) -> String {
    let mut chars: Vec<char> = seed.chars().collect();
    for _ in 0..rng.random_range(1..=4) {
        let at = rng.random_range(0..=chars.len());
        let c = ALPHABET[rng.random_range(0..ALPHABET.len())];
        match rng.random_range(0..3) {
            0 => chars.insert(at, c),
            1 if at < chars.len() => {
                chars.remove(at);
            }
            _ if at < chars.len() => chars[at] = c,
            _ => chars.push(c),
        }
    }
    chars.into_iter().collect()
}

fn check_reference(input: &str) {
    let _ = Registry::parse(input);
    let _ = Repository::parse(input);
    let _ = Tag::parse(input);
    let _ = Digest::parse(input);
    if let Ok(location) = RegistryLocation::parse(input) {
        let printed = location.to_string();
        let again = RegistryLocation::parse(&printed).unwrap_or_else(|e| {
            panic!("{input:?} printed as {printed:?}, which does not parse: {e}")
        });
        assert_eq!(again.to_string(), printed, "{input:?}");
        let _ = location.repository("x/y");
    }
    if let Ok(image) = ImageRef::parse(input) {
        // A host without a dot, a port or `localhost` reads as a Docker Hub namespace once
        // printed (its uppercase, which marked it as a host, is gone; `R/x` → `r/x`): only the
        // unambiguous ones must parse back to themselves. (cargo-fuzz found `R/` + a 254-byte
        // path, which prints as a 256-byte Docker Hub path.)
        let printed = image.to_string();
        let authority = image.registry.authority();
        if authority.contains(['.', ':', '[']) || authority == "localhost" {
            let again = ImageRef::parse(&printed).unwrap_or_else(|e| {
                panic!("{input:?} printed as {printed:?}, which does not parse: {e}")
            });
            assert_eq!(again.to_string(), printed, "{input:?}");
        }
        let _ = image.reference();
    }
}

#[test]
fn reference_parsers_never_panic_on_random_input() {
    let (mut rng, seed) = rng();
    eprintln!("seed {seed}");
    for seed_text in REFERENCE_SEEDS {
        check_reference(seed_text);
    }
    for i in 0..ITERATIONS {
        let input = if i % 2 == 0 {
            random_string(&mut rng, 40)
        } else {
            let base = REFERENCE_SEEDS[rng.random_range(0..REFERENCE_SEEDS.len())];
            mutate(&mut rng, base)
        };
        check_reference(&input);
    }
    // Raw bytes, decoded lossily as the CLI would see them.
    for _ in 0..ITERATIONS / 4 {
        let bytes: Vec<u8> = (0..rng.random_range(0..48)).map(|_| rng.random()).collect();
        check_reference(&String::from_utf8_lossy(&bytes));
    }
    // Found by cargo-fuzz: an uppercase single-label host and a path at the length limit.
    check_reference(&format!("R/{}", "z_x".repeat(84) + "ab"));
    // Long inputs near the length limits.
    for n in [127, 128, 129, 254, 255, 256, 1000] {
        check_reference(&"a".repeat(n));
        check_reference(&format!(
            "localhost:5000/{}:{}",
            "a/".repeat(n / 2) + "b",
            "t".repeat(n)
        ));
    }
}

const CONFIG_SEED: &str = r#"[package]
name = "fuzzed"
version = "0.1.0"

[package.metadata.cluster]
registry = { external = "localhost:5001", internal = "registry:5000" }
image = "team/app"
tags = ["{version}", "latest"]
bin = "app"
base = "scratch"
builder = "oci"
env = { RUST_LOG = "info" }
labels = { "org.example.team" = "a" }
user = "1000:1000"
include = [{ from = "static", to = "/srv/static" }]
insecure = ["registry:5000"]
ca-cert = "ca.pem"
"#;

/// Near misses besides the real keys, so unknown-key paths are exercised too.
const NEAR_MISSES: &[&str] = &["regsitry", "Image", "", "include.from"];

fn random_key(rng: &mut StdRng) -> &'static str {
    let i = rng.random_range(0..config::KNOWN_KEYS.len() + NEAR_MISSES.len());
    config::KNOWN_KEYS
        .get(i)
        .copied()
        .unwrap_or_else(|| NEAR_MISSES[i - config::KNOWN_KEYS.len()])
}

fn random_json(rng: &mut StdRng, depth: u32) -> Value {
    match rng.random_range(0..if depth > 2 { 5 } else { 8 }) {
        0 => Value::Null,
        1 => json!(rng.random::<bool>()),
        2 => json!(rng.random::<i64>()),
        3 => json!(rng.random::<f64>()),
        4 => json!(random_string(rng, 20)),
        5 => Value::Array(
            (0..rng.random_range(0..4))
                .map(|_| random_json(rng, depth + 1))
                .collect(),
        ),
        _ => {
            let mut map = serde_json::Map::new();
            for _ in 0..rng.random_range(0..5) {
                let key = if rng.random_bool(0.7) {
                    random_key(rng).to_string()
                } else {
                    ["from", "to", "external", "internal"][rng.random_range(0..4)].to_string()
                };
                map.insert(key, random_json(rng, depth + 1));
            }
            Value::Object(map)
        }
    }
}

/// Parses `text` as a Cargo.toml the way cargo metadata would hand it over, and reads its
/// cluster table. Errors are fine; panics are not.
fn check_config(dir: &std::path::Path, text: &str) {
    let manifest = dir.join("Cargo.toml");
    std::fs::write(&manifest, text).unwrap();
    let Ok(doc) = toml::from_str::<toml::Value>(text) else {
        return;
    };
    let Ok(json) = serde_json::to_value(&doc) else {
        return;
    };
    let table = &json["package"]["metadata"]["cluster"];
    if let Err(e) = ClusterConfig::from_table(table, &Origin::package(&manifest)) {
        assert!(!e.to_string().is_empty());
    }
    let workspace = &json["workspace"]["metadata"]["cluster"];
    let _ = ClusterConfig::from_table(workspace, &Origin::workspace(&manifest));
}

#[test]
fn config_reader_never_panics_on_random_input() {
    let (mut rng, seed) = rng();
    eprintln!("seed {seed}");
    let dir = tempfile::tempdir().unwrap();
    check_config(dir.path(), CONFIG_SEED);
    for i in 0..ITERATIONS {
        if i % 2 == 0 {
            // Mutated TOML text: exercises the locator that points errors at lines.
            let text = mutate(&mut rng, CONFIG_SEED);
            check_config(dir.path(), &text);
        } else {
            // Structured: random values under real and misspelt keys.
            let manifest = dir.path().join("Cargo.toml");
            std::fs::write(&manifest, CONFIG_SEED).unwrap();
            let value = random_json(&mut rng, 0);
            let origin = if rng.random_bool(0.5) {
                Origin::package(&manifest)
            } else {
                Origin::workspace(&manifest)
            };
            if let Ok(config) = ClusterConfig::from_table(&value, &origin) {
                let other = ClusterConfig::from_table(&random_json(&mut rng, 0), &origin);
                if let Ok(other) = other {
                    let _ = config.merged_over(other);
                }
            }
        }
    }
}
