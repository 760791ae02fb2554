//! A password written into any setting or flag that takes a registry address or an image
//! reference (`user:password@host`) is refused, the address named with its userinfo hidden: no
//! piece of the password appears on stdout, on stderr (also with -vv and as GitHub annotations)
//! or in GITHUB_OUTPUT.

use std::fs;

use super::*;

/// A user and a password for addresses: the password holds `:`, `@` and `%40`, and each piece
/// carries `Qz` so any leak is found.
const ADDRESS_USER: &str = "adm1nQz";
const ADDRESS_PASSWORD: &str = "TopQz7:Secret9Qz@MidQz8:InnerQz@TailQz9%40PctQz";

/// One way of giving the tool an address: a Cargo.toml, files beside it, and the command line.
struct AddressCase {
    name: &'static str,
    cargo_toml: String,
    files: Vec<(&'static str, String)>,
    args: Vec<String>,
    env: Vec<(&'static str, String)>,
    /// `-vv` exists for pushes and `resolve`, not for `verify`.
    verbose: bool,
}

/// Every setting and flag that takes a registry address or an image reference, each given one
/// with `ADDRESS_USER:ADDRESS_PASSWORD@` in it (`secret`), the others valid (`host`).
fn address_cases(host: &str, secret: &str) -> Vec<AddressCase> {
    let package = |cluster: &str| {
        format!(
            "[package]\nname = \"addr\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n\
             [package.metadata.cluster]\n{cluster}\n\n[workspace]\n"
        )
    };
    let digest = format!("sha256:{}", "a".repeat(64));
    let case = |name, cargo_toml: String, args: &[&str]| AddressCase {
        name,
        cargo_toml,
        files: Vec::new(),
        args: args.iter().map(|a| a.to_string()).collect(),
        env: Vec::new(),
        verbose: true,
    };
    let plain = package(&format!("registry = \"{host}\""));
    let mut cases = vec![
        case(
            "registry",
            package(&format!("registry = \"{secret}/team\"")),
            &[],
        ),
        case(
            "registry.external",
            package(&format!(
                "registry = {{ external = \"{secret}\", internal = \"{host}\" }}"
            )),
            &[],
        ),
        case(
            "registry.internal",
            package(&format!(
                "registry = {{ external = \"{host}\", internal = \"http://{secret}/team\" }}"
            )),
            &[],
        ),
        case(
            "base",
            package(&format!(
                "registry = \"{host}\"\nbase = \"{secret}/base:1\""
            )),
            &[],
        ),
        case(
            "insecure",
            package(&format!("registry = \"{host}\"\ninsecure = [\"{secret}\"]")),
            &[],
        ),
        case(
            "image",
            package(&format!("registry = \"{host}\"\nimage = \"{secret}/app\"")),
            &[],
        ),
        case(
            "workspace registry",
            format!(
                "[package]\nname = \"addr\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n\
                 [workspace]\n\n[workspace.metadata.cluster]\nregistry = \"https://{secret}\"\n"
            ),
            &[],
        ),
        case("--registry", plain.clone(), &["--registry", secret]),
        case(
            "--registry-external",
            plain.clone(),
            &["--registry-external", secret],
        ),
        case(
            "--registry-internal",
            plain.clone(),
            &[&format!("--registry-internal={secret}/team")],
        ),
        case(
            "resolve --registry",
            plain.clone(),
            &["resolve", "-f", "deploy.yaml", "--registry", secret],
        ),
        case(
            "verify REF",
            plain.clone(),
            &["verify", &format!("{secret}/app@{digest}")],
        ),
        case(
            "verify --insecure",
            plain.clone(),
            &[
                "verify",
                "--insecure",
                secret,
                &format!("{host}/app@{digest}"),
            ],
        ),
    ];
    for (side, yaml) in [
        ("host", format!("host: \"{secret}\"\n")),
        (
            "hostFromContainerRuntime",
            format!("host: \"{host}\"\nhostFromContainerRuntime: \"{secret}\"\n"),
        ),
    ] {
        let mut c = case(
            "registry.local-registry-hosting",
            package("registry = { local-registry-hosting = \"hosting.yaml\" }"),
            &[],
        );
        c.name = if side == "host" {
            "local-registry-hosting host"
        } else {
            "local-registry-hosting hostFromContainerRuntime"
        };
        c.files.push(("hosting.yaml", yaml));
        cases.push(c);
    }
    for variable in [
        "ADAPT_PUSH_REGISTRY",
        "ADAPT_PUSH_REGISTRY_EXTERNAL",
        "ADAPT_PUSH_REGISTRY_INTERNAL",
    ] {
        let mut c = case(variable, plain.clone(), &[]);
        c.env.push((variable, secret.to_string()));
        cases.push(c);
    }
    for c in &mut cases {
        if c.args.first().is_some_and(|a| a == "verify") {
            c.verbose = false;
        }
        if c.args.first().is_some_and(|a| a == "resolve") {
            c.files
                .push(("deploy.yaml", "image: adapt://addr\n".to_string()));
        }
    }
    cases
}

#[test]
fn no_piece_of_a_password_in_any_address_setting_is_ever_shown() {
    // A live registry behind the address, so nothing fails for want of one.
    let registry = TestRegistry::start();
    let host = registry.addr();
    let secret = format!("{ADDRESS_USER}:{ADDRESS_PASSWORD}@{host}");
    let mut fragments = userinfo_fragments(ADDRESS_USER, ADDRESS_PASSWORD);
    fragments.push("Qz".into());
    for case in address_cases(&host, &secret) {
        let dir = tempfile::tempdir().unwrap();
        let manifest = dir.path().join("Cargo.toml");
        fs::write(&manifest, &case.cargo_toml).unwrap();
        fs::create_dir_all(dir.path().join("src")).unwrap();
        fs::write(dir.path().join("src/main.rs"), EMPTY_MAIN).unwrap();
        for (name, text) in &case.files {
            fs::write(dir.path().join(name), text).unwrap();
        }
        let modes: &[(&str, &[&str], bool)] = &[
            ("plain", &[], false),
            ("-vv", &["-vv"], false),
            ("GitHub Actions", &[], true),
        ];
        for &(mode, extra, github) in modes {
            if mode == "-vv" && !case.verbose {
                continue;
            }
            let outputs = dir.path().join("github-output");
            let mut cmd = tool();
            cmd.current_dir(dir.path()).arg("adapt-push");
            let verify = case.args.first().is_some_and(|a| a == "verify");
            let (sub, rest) = match case.args.first().map(String::as_str) {
                Some(s @ ("verify" | "resolve")) => (Some(s), &case.args[1..]),
                _ => (None, &case.args[..]),
            };
            cmd.args(sub);
            if !verify {
                cmd.arg("--manifest-path").arg(&manifest);
            }
            cmd.args(rest).args(extra);
            for (k, v) in &case.env {
                cmd.env(k, v);
            }
            if github {
                cmd.env("GITHUB_ACTIONS", "true")
                    .env("GITHUB_OUTPUT", &outputs);
            }
            let run = cmd.run();
            let what = format!("{} ({mode})", case.name);
            assert!(
                !run.status.success(),
                "{what}: an address with a password must be refused:\n{}",
                run.stderr
            );
            run.assert_failed();
            assert_no_secret_in(&format!("{what}: stdout"), &run.stdout, &fragments);
            assert_no_secret_in(&format!("{what}: stderr"), &run.stderr, &fragments);
            let written = fs::read_to_string(&outputs).unwrap_or_default();
            assert_no_secret_in(&format!("{what}: GITHUB_OUTPUT"), &written, &fragments);
            // The address is still named, with its userinfo hidden.
            assert!(
                run.stderr.contains(&format!("<redacted>@{host}")),
                "{what}:\n{}",
                run.stderr
            );
            if github && !verify {
                assert!(run.stderr.contains("::error"), "{what}:\n{}", run.stderr);
            }
        }
    }
}
