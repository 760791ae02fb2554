//! Certificates made with the openssl CLI: ONE private CA helper, [`Ca`], and the server and
//! client certificates it signs. Registries, the token issuer and the TLS engine all use it.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::run_ok;

/// Runs `openssl args…` in `dir`; panics with its stderr when it fails.
pub fn openssl(dir: &Path, args: &[&str]) {
    run_ok(
        Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .stdin(Stdio::null()),
        &format!("openssl {} (apt-get install openssl)", args.join(" ")),
    );
}

/// A private CA in a directory: `ca.pem` and its PKCS#8 RSA key `ca-key.pem`, valid two days.
pub struct Ca {
    pub dir: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A certificate the CA signed, and its key.
pub struct Issued {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Ca {
    /// A new CA named `name` (its subject CN) in `dir`, created if missing.
    pub fn create(dir: &Path, name: &str) -> Ca {
        fs::create_dir_all(dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        let subject = format!("/CN={name}");
        openssl(
            dir,
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "2",
                "-subj",
                &subject,
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
                "-keyout",
                "ca-key.pem",
                "-out",
                "ca.pem",
            ],
        );
        Ca {
            dir: dir.to_path_buf(),
            cert: dir.join("ca.pem"),
            key: dir.join("ca-key.pem"),
        }
    }

    /// A server certificate for 127.0.0.1 and localhost, written as `cert`/`key` in the CA's
    /// directory.
    pub fn server(&self, cert: &str, key: &str) -> Issued {
        self.issue(
            "127.0.0.1",
            "keyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n\
             subjectAltName=IP:127.0.0.1,DNS:localhost\n",
            cert,
            key,
        )
    }

    /// A TLS client certificate, written as `cert`/`key` in the CA's directory.
    pub fn client(&self, cert: &str, key: &str) -> Issued {
        self.issue(
            "client",
            "keyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth\n",
            cert,
            key,
        )
    }

    fn issue(&self, common_name: &str, extensions: &str, cert: &str, key: &str) -> Issued {
        let ext = format!("{cert}.ext");
        let csr = format!("{cert}.csr");
        fs::write(
            self.dir.join(&ext),
            format!("basicConstraints=CA:FALSE\n{extensions}"),
        )
        .expect("write the certificate's extensions");
        let subject = format!("/CN={common_name}");
        openssl(
            &self.dir,
            &[
                "req", "-newkey", "rsa:2048", "-nodes", "-subj", &subject, "-keyout", key, "-out",
                &csr,
            ],
        );
        let (ca_cert, ca_key) = (self.cert.to_string_lossy(), self.key.to_string_lossy());
        openssl(
            &self.dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                &ca_cert,
                "-CAkey",
                &ca_key,
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                &ext,
                "-out",
                cert,
            ],
        );
        Issued {
            cert: self.dir.join(cert),
            key: self.dir.join(key),
        }
    }
}
