//! How the documents are found: referrers accumulate in the fallback tag without duplicates,
//! also when two pushes of one image update it at once; a fallback tag that keeps losing our
//! entries fails the push; and a registry with the referrers API gets no fallback tag.

use super::*;

#[test]
fn referrers_accumulate_in_the_fallback_tag_without_duplicates() {
    let registry = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let manifest = write_crate(
        dir.path(),
        "acc",
        &format!(
            "\n[package.metadata.cluster]\nregistry = \"{}\"\n",
            registry.addr()
        ),
        EMPTY_MAIN,
    );

    // The same image (reproducible) pushed with each SBOM format: both SBOMs stay listed.
    let first = adapt_push(&manifest)
        .args(["--format", "json"])
        .run()
        .json();
    let second = adapt_push(&manifest)
        .args(["--format", "json", "--sbom", "cyclonedx"])
        .run()
        .json();
    let digest = first["images"][0]["digest"].as_str().unwrap();
    assert_eq!(second["images"][0]["digest"], digest);
    let spdx = first["images"][0]["sbom"]["digest"].as_str().unwrap();
    let cdx = second["images"][0]["sbom"]["digest"].as_str().unwrap();
    assert_ne!(spdx, cdx);
    let listed: Vec<String> = fallback_referrers(&registry, "acc", digest)
        .iter()
        .map(|m| m["digest"].as_str().unwrap().to_string())
        .collect();
    assert!(listed.contains(&spdx.to_string()), "{listed:?}");
    assert!(listed.contains(&cdx.to_string()), "{listed:?}");
    assert_eq!(listed.len(), 3, "spdx, cyclonedx, provenance: {listed:?}");
    let cdx_doc = referred_document(&registry, "acc", cdx, digest);
    assert_eq!(cdx_doc["bomFormat"], "CycloneDX");
    assert_eq!(cdx_doc["specVersion"], "1.5");

    // The first push again: nothing is listed twice.
    adapt_push(&manifest)
        .args(["--format", "json"])
        .run()
        .json();
    assert_eq!(fallback_referrers(&registry, "acc", digest).len(), 3);

    // A different image in the same repository gets its own list; the first keeps its own.
    std::fs::write(
        dir.path().join("src/main.rs"),
        "fn main() { println!(); }\n",
    )
    .unwrap();
    let other = adapt_push(&manifest)
        .args(["--format", "json"])
        .run()
        .json();
    let other_digest = other["images"][0]["digest"].as_str().unwrap();
    assert_ne!(other_digest, digest);
    assert_eq!(fallback_referrers(&registry, "acc", other_digest).len(), 2);
    assert_eq!(fallback_referrers(&registry, "acc", digest).len(), 3);
    let mut referrer_tags: Vec<String> = registry
        .all_tags("acc")
        .into_iter()
        .filter(|t| is_referrers_tag(t))
        .collect();
    referrer_tags.sort();
    let mut expected = vec![
        digest.replacen(':', "-", 1),
        other_digest.replacen(':', "-", 1),
    ];
    expected.sort();
    assert_eq!(referrer_tags, expected);

    // Turned off: nothing attached, nothing reported.
    let none = adapt_push(&manifest)
        .args([
            "--format",
            "json",
            "--sbom",
            "none",
            "--provenance",
            "false",
        ])
        .run()
        .json();
    assert!(none["images"][0].get("sbom").is_none());
    assert!(none["images"][0].get("provenance").is_none());
}

/// Two pushes of one image at once (CI matrix jobs), one attaching an SPDX SBOM and the other a
/// CycloneDX one, to a registry without the referrers API: both update the one fallback tag,
/// and neither's entries may be lost. Five rounds, each on a fresh repository (a fresh tag to
/// race on).
#[test]
fn concurrent_pushes_of_one_image_keep_every_referrer_in_the_fallback_tag() {
    let registry = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let crate_as = |image: &str| {
        write_crate(
            dir.path(),
            "race",
            &format!(
                "\n[package.metadata.cluster]\nregistry = \"{}\"\nimage = \"{image}\"\n",
                registry.addr()
            ),
            EMPTY_MAIN,
        )
    };
    // Built once first, so both pushes of a round find the build done and push at once.
    adapt_push(crate_as("race/warm"))
        .args(["--format", "json", "--no-push"])
        .run()
        .assert_ok();
    for round in 1..=5 {
        let repo = format!("race/r{round}");
        let manifest = crate_as(&repo);
        let start = |sbom: &str| {
            adapt_push(&manifest)
                .args(["--format", "json", "--sbom", sbom, "-v"])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        };
        let (spdx, cdx) = (start("spdx"), start("cyclonedx"));
        let (spdx, cdx) = (
            Run::from(spdx.wait_with_output().unwrap()),
            Run::from(cdx.wait_with_output().unwrap()),
        );
        let log = format!("{}\n{}", spdx.stderr, cdx.stderr);
        let (spdx, cdx) = (spdx.json(), cdx.json());
        let digest = spdx["images"][0]["digest"].as_str().unwrap();
        assert_eq!(cdx["images"][0]["digest"], digest, "one image");
        let listed: Vec<String> = fallback_referrers(&registry, &repo, digest)
            .iter()
            .map(|m| m["digest"].as_str().unwrap().to_string())
            .collect();
        let mut expected: Vec<String> = [&spdx, &cdx]
            .iter()
            .flat_map(|run| {
                let image = &run["images"][0];
                [&image["sbom"]["digest"], &image["provenance"]["digest"]]
                    .map(|d| d.as_str().unwrap().to_string())
            })
            .collect();
        expected.sort();
        expected.dedup();
        // The SBOMs differ; the provenance is the same document from both.
        assert_eq!(expected.len(), 3, "{expected:?}");
        let mut got = listed.clone();
        got.sort();
        assert_eq!(
            got, expected,
            "round {round}: the fallback tag lists {listed:?}\n{log}"
        );
    }
}

/// A fallback tag that never shows our entries when read back, however often they are written
/// (a stand-in, through the HTTP fault proxy answering every GET of the tag with 404, for a tag
/// that other pushes keep rewriting): the push fails and says so, instead of claiming the SBOM
/// was attached.
#[test]
fn a_fallback_tag_that_keeps_losing_our_entries_fails_the_push() {
    use crate::common::faults::{Fault, HttpFaultProxy, HttpFaults};
    let registry = TestRegistry::start();
    let proxy = HttpFaultProxy::start(
        &registry.addr(),
        HttpFaults {
            period: 1,
            offset: 0,
            burst: vec![Fault::error(404, "MANIFEST_UNKNOWN", "manifest unknown")],
            method: Some("GET".into()),
            path_contains: Some("/manifests/sha256-".into()),
            content_type_contains: None,
        },
    );
    let dir = tempfile::tempdir().unwrap();
    let manifest = write_crate(
        dir.path(),
        "lost",
        &format!(
            "\n[package.metadata.cluster]\nregistry = \"{}\"\n",
            proxy.addr()
        ),
        EMPTY_MAIN,
    );
    let run = adapt_push(&manifest).shared_target_dir().run();
    run.assert_failed();
    assert!(!run.stderr.contains("Attached"), "{}", run.stderr);
    let said = run.stderr.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        said.contains("still lacks") && said.contains("after 5 writes"),
        "{}",
        run.stderr
    );
    assert!(said.contains("was pushed, but its SBOM"), "{}", run.stderr);
    let writes = proxy
        .exchanges()
        .iter()
        .filter(|e| e.method == "PUT" && e.path.contains("/manifests/sha256-"))
        .count();
    assert_eq!(writes, 5, "the tag is written a bounded number of times");
}

/// A referrers API in front of the real registry. Distribution 2.8 has none, and no registry
/// with one can be installed here, so this stub answers `GET /v2/<name>/referrers/<digest>`
/// from the manifests with a `subject` that were PUT through it; every other request goes to
/// the real registry unchanged (one request per connection).
struct ReferrersApi {
    addr: String,
}

type Referrers = std::sync::Arc<std::sync::Mutex<Vec<(String, String, Value)>>>;

impl ReferrersApi {
    fn start(target: String) -> ReferrersApi {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let known: Referrers = Default::default();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (target, known) = (target.clone(), known.clone());
                std::thread::spawn(move || {
                    let _ = ReferrersApi::handle(stream, &target, &known);
                });
            }
        });
        ReferrersApi { addr }
    }

    fn handle(
        mut client: std::net::TcpStream,
        target: &str,
        known: &Referrers,
    ) -> std::io::Result<()> {
        use std::io::{BufRead, BufReader, Read, Write};
        let mut reader = BufReader::new(client.try_clone()?);
        let mut head = Vec::new();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line)? == 0 {
                return Ok(());
            }
            if line == "\r\n" {
                break;
            }
            head.push(line.trim_end().to_string());
        }
        let request_line = head.first().cloned().unwrap_or_default();
        let mut parts = request_line.split(' ');
        let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        let header = |name: &str| {
            head.iter().skip(1).find_map(|h| {
                let (k, v) = h.split_once(':')?;
                k.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
            })
        };
        let mut body = Vec::new();
        if let Some(n) = header("content-length").and_then(|v| v.parse::<usize>().ok()) {
            body.resize(n, 0);
            reader.read_exact(&mut body)?;
        } else if header("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
            loop {
                let mut size = String::new();
                reader.read_line(&mut size)?;
                let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
                let mut chunk = vec![0; n + 2];
                reader.read_exact(&mut chunk)?;
                if n == 0 {
                    break;
                }
                body.extend_from_slice(&chunk[..n]);
            }
        }

        if method == "GET"
            && let Some((name, subject)) = path
                .strip_prefix("/v2/")
                .and_then(|p| p.split_once("/referrers/"))
        {
            let manifests: Vec<Value> = known
                .lock()
                .unwrap()
                .iter()
                .filter(|(n, s, _)| n == name && s == subject)
                .map(|(_, _, d)| d.clone())
                .collect();
            let index = serde_json::json!({
                "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests,
            })
            .to_string();
            write!(
                client,
                "HTTP/1.1 200 OK\r\nContent-Type: {OCI_INDEX}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{index}",
                index.len()
            )?;
            return Ok(());
        }

        // Forward as is, with Content-Length and one request per connection.
        let mut upstream = std::net::TcpStream::connect(target)?;
        let mut request = format!("{request_line}\r\n");
        for h in head.iter().skip(1) {
            let lower = h.to_ascii_lowercase();
            if !lower.starts_with("connection:")
                && !lower.starts_with("content-length:")
                && !lower.starts_with("transfer-encoding:")
            {
                request.push_str(h);
                request.push_str("\r\n");
            }
        }
        if !body.is_empty() || method == "PUT" || method == "POST" || method == "PATCH" {
            request.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        request.push_str("Connection: close\r\n\r\n");
        upstream.write_all(request.as_bytes())?;
        upstream.write_all(&body)?;
        let mut response = Vec::new();
        upstream.read_to_end(&mut response)?;
        client.write_all(&response)?;

        // A manifest with a subject, stored: index it.
        let stored = response.starts_with(b"HTTP/1.1 201");
        if method == "PUT" && path.contains("/manifests/") && stored {
            let manifest: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            if let (Some(subject), Some(name)) = (
                manifest["subject"]["digest"].as_str(),
                path.strip_prefix("/v2/")
                    .and_then(|p| p.split_once("/manifests/")),
            ) {
                use sha2::Digest as _;
                let digest = format!("sha256:{}", hex::encode(sha2::Sha256::digest(&body)));
                known.lock().unwrap().push((
                    name.0.to_string(),
                    subject.to_string(),
                    serde_json::json!({
                        "mediaType": manifest["mediaType"],
                        "artifactType": manifest["artifactType"],
                        "digest": digest,
                        "size": body.len(),
                    }),
                ));
            }
        }
        Ok(())
    }
}

#[test]
fn with_a_referrers_api_no_fallback_tag_is_written() {
    let registry = TestRegistry::start();
    let api = ReferrersApi::start(registry.addr());
    let dir = tempfile::tempdir().unwrap();
    let manifest = write_crate(
        dir.path(),
        "withapi",
        &format!(
            "\n[package.metadata.cluster]\nregistry = \"{}\"\n",
            api.addr
        ),
        EMPTY_MAIN,
    );
    let json = adapt_push(&manifest)
        .args(["--format", "json"])
        .run()
        .json();
    let image = &json["images"][0];
    let digest = image["digest"].as_str().unwrap();
    assert_eq!(image["sbom"]["listed_via"], "the referrers API", "{image}");
    assert_eq!(image["provenance"]["listed_via"], "the referrers API");
    assert!(
        !registry
            .all_tags("withapi")
            .iter()
            .any(|t| is_referrers_tag(t)),
        "no fallback tag when the registry has the API: {:?}",
        registry.all_tags("withapi")
    );
    // The manifests the tool pushed name the image as their subject (that is how the API
    // found them), and `verify` finds them through the API.
    let (status, _, body) = http_get(
        &api.addr,
        &format!("/v2/withapi/referrers/{digest}"),
        OCI_INDEX,
    );
    assert_eq!(status, 200);
    let listed: Value = serde_json::from_slice(&body).unwrap();
    let digests: Vec<&str> = listed["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["digest"].as_str())
        .collect();
    assert!(
        digests.contains(&image["sbom"]["digest"].as_str().unwrap()),
        "{listed}"
    );
    assert!(
        digests.contains(&image["provenance"]["digest"].as_str().unwrap()),
        "{listed}"
    );
    let out = verify(image["push_ref"].as_str().unwrap())
        .args(["--format", "json"])
        .run();
    out.assert_ok();
    let report: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(report["images"][0]["referrers_via"], "the referrers API");
    assert_eq!(report["ok"], true);
}
