//! CI integration: step outputs in `GITHUB_OUTPUT`, and `::error` annotations under GitHub
//! Actions so configuration errors show on the line of the Cargo.toml that caused them.

use std::io::Write;
use std::path::Path;

use miette::{IntoDiagnostic, Result, WrapErr};

use crate::report::ImageReport;

/// Appends `pull-ref` and `digest` (one image) or `<package>-pull-ref` / `<package>-digest`
/// (several; `<package>-<bin>-…` for a package with several images) to the file
/// `GITHUB_OUTPUT` names, when it is set.
pub fn write_github_output(images: &[ImageReport]) -> Result<()> {
    let Some(path) = std::env::var_os("GITHUB_OUTPUT").filter(|p| !p.is_empty()) else {
        return Ok(());
    };
    let path = Path::new(&path);
    // Pull references come from parsed addresses (which never hold userinfo); hidden anyway,
    // as in every other output.
    let text = crate::reference::redact_userinfo(&github_output(images));
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .into_diagnostic()
        .wrap_err_with(|| format!("appending step outputs to GITHUB_OUTPUT={}", path.display()))
}

fn github_output(images: &[ImageReport]) -> String {
    let mut text = String::new();
    let single = images.len() == 1;
    for image in images {
        // A package with several images (one per binary) names each by its binary too.
        let shared = images.iter().filter(|i| i.package == image.package).count() > 1;
        let prefix = if single {
            String::new()
        } else if shared {
            format!("{}-{}-", image.package, image.bin)
        } else {
            format!("{}-", image.package)
        };
        if let Some(pull_ref) = &image.pull_ref {
            text.push_str(&format!("{prefix}pull-ref={pull_ref}\n"));
        }
        text.push_str(&format!("{prefix}digest={}\n", image.digest));
    }
    text
}

/// True under GitHub Actions (`GITHUB_ACTIONS=true`).
pub fn in_github_actions() -> bool {
    std::env::var("GITHUB_ACTIONS").is_ok_and(|v| v == "true")
}

/// A workflow command: `::error file=F,line=L::message`. Properties and message are escaped as
/// the runner expects (`%`, CR, LF; and `:` `,` in properties).
pub fn error_annotation(file: Option<&Path>, line: Option<usize>, message: &str) -> String {
    let escape_data = |s: &str| {
        s.replace('%', "%25")
            .replace('\r', "%0D")
            .replace('\n', "%0A")
    };
    let escape_property = |s: &str| escape_data(s).replace(':', "%3A").replace(',', "%2C");
    let mut properties = Vec::new();
    if let Some(f) = file {
        properties.push(format!(
            "file={}",
            escape_property(&f.display().to_string())
        ));
    }
    if let Some(l) = line {
        properties.push(format!("line={l}"));
    }
    format!("::error {}::{}", properties.join(","), escape_data(message))
}

/// The annotation for an error report: with the file and line when the report points into a
/// file (configuration errors do), else without.
pub fn annotation_for(report: &miette::Report) -> String {
    let located = report.source_code().and_then(|source| {
        let label = report.labels()?.next()?;
        let contents = source.read_span(label.inner(), 0, 0).ok()?;
        Some((
            contents.name().map(std::path::PathBuf::from),
            contents.line() + 1,
        ))
    });
    let message = match report.help() {
        Some(help) => format!("{report}\n{help}"),
        None => report.to_string(),
    };
    let message = crate::reference::redact_userinfo(&message);
    match located {
        Some((file, line)) => error_annotation(file.as_deref(), Some(line), &message),
        None => error_annotation(None, None, &message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pushed(package: &str, pull_ref: Option<&str>) -> ImageReport {
        pushed_bin(package, package, pull_ref)
    }

    fn pushed_bin(package: &str, bin: &str, pull_ref: Option<&str>) -> ImageReport {
        ImageReport {
            package: package.into(),
            bin: bin.into(),
            push_ref: pull_ref.map(String::from),
            pull_ref: pull_ref.map(String::from),
            digest: "sha256:ab".into(),
            tags: vec![],
            builder: "oci".into(),
            sbom: None,
            provenance: None,
            platforms: vec![],
        }
    }

    #[test]
    fn one_image_plain_keys_several_prefixed() {
        assert_eq!(
            github_output(&[pushed("api", Some("r:5/api@sha256:ab"))]),
            "pull-ref=r:5/api@sha256:ab\ndigest=sha256:ab\n"
        );
        assert_eq!(
            github_output(&[pushed("api", Some("x")), pushed("web", None)]),
            "api-pull-ref=x\napi-digest=sha256:ab\nweb-digest=sha256:ab\n"
        );
        // Two binaries of one package: their keys do not collide.
        assert_eq!(
            github_output(&[
                pushed_bin("app", "server", Some("s")),
                pushed_bin("app", "cli", Some("c")),
                pushed("web", None),
            ]),
            "app-server-pull-ref=s\napp-server-digest=sha256:ab\napp-cli-pull-ref=c\napp-cli-digest=sha256:ab\nweb-digest=sha256:ab\n"
        );
    }

    #[test]
    fn annotations_never_carry_userinfo() {
        let report = miette::miette!(
            help = "not `u:pw@x@h.example`",
            "`https://u:Top@Sec:ret%40X9@h.example/base:1` is bad"
        );
        let line = annotation_for(&report);
        assert!(!line.contains("Top") && !line.contains("pw"), "{line}");
        assert!(
            line.contains("https://<redacted>@h.example/base:1"),
            "{line}"
        );
    }

    #[test]
    fn annotations_escape_what_the_runner_reads_as_syntax() {
        assert_eq!(
            error_annotation(
                Some(Path::new("/a,b/Cargo.toml")),
                Some(7),
                "bad: 100%\nnext"
            ),
            "::error file=/a%2Cb/Cargo.toml,line=7::bad: 100%25%0Anext"
        );
    }
}
