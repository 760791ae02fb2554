//! Cargo workspaces, against a real registry: `[workspace.metadata.cluster]` inherited by
//! members, `-p` and the member the current directory is in, and a compile error in one
//! selected package that pushes nothing at all. (`--workspace` is in `workspace_ci`.)

use crate::common::*;

#[test]
fn workspace_defaults_and_package_selection() {
    let registry = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::write(
        root.join("Cargo.toml"),
        format!(
            "[workspace]\nmembers = [\"a/svc\", \"b/svc\", \"tools\"]\nresolver = \"2\"\n\n\
             [workspace.metadata.cluster]\nregistry = {{ external = \"{}\", internal = \"registry:5000\" }}\ntags = [\"ws-{{version}}\"]\nenv = {{ FROM = \"workspace\", LEVEL = \"ws\" }}\n",
            registry.addr()
        ),
    )
    .unwrap();
    let member = |path: &str, name: &str, extra: &str| {
        let d = root.join(path);
        std::fs::create_dir_all(d.join("src")).unwrap();
        std::fs::write(
            d.join("Cargo.toml"),
            format!(
                "[package]\nname = \"{name}\"\nversion = \"0.2.0\"\nedition = \"2021\"\n{extra}"
            ),
        )
        .unwrap();
        std::fs::write(d.join("src/main.rs"), HELLO_ONCE).unwrap();
    };
    // Two packages whose directories share a basename must not collide.
    member(
        "a/svc",
        "alpha",
        "\n[package.metadata.cluster]\nimage = \"a/svc\"\nenv = { LEVEL = \"pkg\" }\n",
    );
    member("b/svc", "beta", "\n[package.metadata.cluster]\n");
    member("tools", "tools", "");

    // At the virtual root without -p: an error that lists the packages with settings.
    let out = adapt_push(root.join("Cargo.toml")).run();
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    let err = &out.stderr;
    assert!(
        err.contains("virtual workspace") && err.contains("alpha") && err.contains("beta"),
        "{err}"
    );
    assert!(registry.tags("a/svc").is_empty());

    // -p picks a member; workspace tags and env are inherited; package keys win.
    let out = adapt_push(root.join("Cargo.toml"))
        .args(["-p", "alpha", "--format", "json"])
        .run();
    out.assert_ok();
    let json: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert!(
        json["images"][0]["pull_ref"]
            .as_str()
            .unwrap()
            .starts_with("registry:5000/a/svc@sha256:")
    );
    assert_eq!(registry.tags("a/svc"), vec!["ws-0.2.0"]);
    let (_, _, body) = registry.manifest("a/svc", "ws-0.2.0");
    let m: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let cfg = m["config"]["digest"].as_str().unwrap();
    let (_, _, config) = http_get(&registry.addr(), &format!("/v2/a/svc/blobs/{cfg}"), "");
    let config: serde_json::Value = serde_json::from_slice(&config).unwrap();
    let env: Vec<&str> = config["config"]["Env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap())
        .collect();
    assert!(
        env.contains(&"FROM=workspace") && env.contains(&"LEVEL=pkg"),
        "{env:?}"
    );

    // From inside a member's directory, that member (image defaults to the package name).
    let out = tool()
        .arg("adapt-push")
        .current_dir(root.join("b/svc"))
        .run();
    out.assert_ok();
    assert!(
        out.stdout.starts_with("registry:5000/beta@sha256:"),
        "{}",
        out.stdout
    );
    assert_eq!(registry.tags("beta"), vec!["ws-0.2.0"]);
}

#[test]
fn a_compile_error_in_one_package_pushes_nothing_at_all() {
    let registry = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::write(
        root.join("Cargo.toml"),
        format!(
            "[workspace]\nmembers = [\"api\", \"worker\"]\nresolver = \"2\"\n\n\
             [workspace.metadata.cluster]\nregistry = \"{}\"\n",
            registry.addr()
        ),
    )
    .unwrap();
    for (name, main) in [
        ("api", HELLO_ONCE),
        ("worker", "fn main() { this is not rust }\n"),
    ] {
        let d = root.join(name);
        std::fs::create_dir_all(d.join("src")).unwrap();
        std::fs::write(
            d.join("Cargo.toml"),
            format!("[package]\nname = \"{name}\"\nversion = \"0.1.0\"\nedition = \"2021\"\n"),
        )
        .unwrap();
        std::fs::write(d.join("src/main.rs"), main).unwrap();
    }
    let out = adapt_push(root.join("Cargo.toml"))
        .args(["-p", "api", "-p", "worker"])
        .run();
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    // One `cargo build` for both: cargo names the package, we name the command.
    assert!(
        out.stderr.contains("could not compile `worker`")
            && out.stderr.contains(
                "`cargo build -p api@0.1.0 -p worker@0.1.0 --profile release` failed (cargo's errors are above); nothing was pushed"
            ),
        "{}",
        out.stderr
    );
    assert!(
        registry.tags("api").is_empty(),
        "api must not be pushed when worker fails to build"
    );
}
