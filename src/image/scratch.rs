//! What an image without a base carries besides the binary, like distroless/static: users,
//! `/tmp`, name-service settings and CA certificates where TLS libraries look by default.

use std::path::Path;

use bytes::Bytes;

use crate::dpkg::{OsRelease, Package};
use crate::image::layer::LayerBuilder;

/// The CA bundle Debian-family hosts keep; copied so TLS clients in the image work.
pub const CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// Users a scratch image knows by name (as distroless does).
pub const USERS: &[(&str, u32)] = &[("root", 0), ("nonroot", 65532), ("nobody", 65534)];

const PASSWD: &str = "root:x:0:0:root:/root:/sbin/nologin\n\
nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n\
nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n";

const GROUP: &str = "root:x:0:\nnonroot:x:65532:\nnobody:x:65534:\n";

const NSSWITCH: &str = "passwd: files\ngroup: files\nshadow: files\nhosts: files dns\n\
networks: files\nprotocols: files\nservices: files\n";

/// OPENSSLDIRs whose `cert.pem` and `certs/` OpenSSL's default verify paths read: Debian's
/// libssl (`/usr/lib/ssl`, what a binary linked to the host's libssl loads) and the libcrypto
/// that the `openssl` crate's `vendored` feature builds (openssl-src configures
/// `--openssldir=/usr/local/ssl`).
const OPENSSL_DIRS: &[&str] = &["/usr/lib/ssl", "/usr/local/ssl"];

/// Adds the scratch image's system files to `layer`. `tzdata`: the host's zoneinfo too.
pub fn add_system_files(layer: &mut LayerBuilder, tzdata: bool) -> std::io::Result<()> {
    layer.add_bytes("/etc/passwd", Bytes::from_static(PASSWD.as_bytes()), 0o644);
    layer.add_bytes("/etc/group", Bytes::from_static(GROUP.as_bytes()), 0o644);
    layer.add_bytes(
        "/etc/nsswitch.conf",
        Bytes::from_static(NSSWITCH.as_bytes()),
        0o644,
    );
    layer.add_dir("/tmp", 0o1777, 0);
    layer.add_dir("/root", 0o700, 0);
    layer.add_dir("/home/nonroot", 0o700, 65532);
    if Path::new(CA_BUNDLE).is_file() {
        layer.add_host_file_mode(CA_BUNDLE, Path::new(CA_BUNDLE), 0o644);
        for dir in OPENSSL_DIRS {
            layer.add_symlink(&format!("{dir}/cert.pem"), CA_BUNDLE);
            layer.add_symlink(&format!("{dir}/certs"), "/etc/ssl/certs");
        }
    }
    if tzdata {
        let zoneinfo = Path::new("/usr/share/zoneinfo");
        if !zoneinfo.is_dir() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "`tzdata = true`, but this host has no /usr/share/zoneinfo (install the tzdata package)",
            ));
        }
        layer.add_host_path("/usr/share/zoneinfo", zoneinfo)?;
    }
    Ok(())
}

/// Where scanners read a distroless image's packages: one dpkg status stanza per file.
pub const STATUS_D: &str = "/var/lib/dpkg/status.d";

/// Records the host packages whose files the image carries, as distroless images do: a
/// `status.d/<package>` stanza each (read by Trivy, Grype and Syft), and the distribution they
/// came from: `/etc/os-release` (what Grype and Syft read; Trivy too for most distributions)
/// plus the file Trivy identifies Debian (`/etc/debian_version`) or Ubuntu (`/etc/lsb-release`)
/// by, copied from the host's `etc` directory. Returns the image paths written.
pub fn add_package_records(
    layer: &mut LayerBuilder,
    packages: &[Package],
    os: &OsRelease,
    etc: &Path,
) -> Vec<String> {
    let mut written = Vec::new();
    let mut add = |layer: &mut LayerBuilder, path: String, text: String| {
        layer.add_bytes(&path, Bytes::from(text), 0o644);
        written.push(path);
    };
    let mut names = std::collections::BTreeSet::new();
    for p in packages {
        // One file per package name, as distroless; a second architecture of the same name
        // (multi-arch) gets its `name:arch`.
        let file = if names.insert(p.name.clone()) {
            p.name.clone()
        } else {
            p.key()
        };
        add(layer, format!("{STATUS_D}/{file}"), p.stanza.clone());
    }
    if packages.is_empty() || os.id.is_none() {
        return written;
    }
    add(layer, "/etc/os-release".into(), os.render());
    let identity = match os.id.as_deref() {
        Some("debian") => Some("debian_version"),
        Some("ubuntu") => Some("lsb-release"),
        _ => None,
    };
    if let Some(name) = identity
        && let Ok(text) = std::fs::read_to_string(etc.join(name))
        && text.len() < 4096
    {
        add(layer, format!("/etc/{name}"), text);
    }
    written
}
