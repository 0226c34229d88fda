//! A test certificate authority and a server certificate for `localhost`,
//! and self-signed server certificates, made with the openssl command.

use std::path::{Path, PathBuf};
use std::process::Command;

pub struct Certificates {
    _dir: tempfile::TempDir,
    pub ca_cert: PathBuf,
    pub other_ca_cert: PathBuf,
    pub server_cert: String,
    pub server_key: String,
}

fn openssl(dir: &Path, args: &[&str]) {
    let output = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|err| panic!("the TLS tests need the openssl command: {err}"));
    assert!(
        output.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn make_ca(dir: &Path, name: &str) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.crt"),
            "-days",
            "3",
            "-subj",
            &format!("/CN=migrate test {name}"),
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    );
}

impl Certificates {
    pub fn generate() -> Certificates {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path();
        make_ca(path, "ca");
        make_ca(path, "other-ca");
        openssl(
            path,
            &[
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-keyout",
                "server.key",
                "-out",
                "server.csr",
                "-subj",
                "/CN=localhost",
            ],
        );
        std::fs::write(
            path.join("server.ext"),
            "subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\n\
             keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        openssl(
            path,
            &[
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                "server.crt",
                "-days",
                "3",
                "-extfile",
                "server.ext",
            ],
        );
        Certificates {
            ca_cert: path.join("ca.crt"),
            other_ca_cert: path.join("other-ca.crt"),
            server_cert: std::fs::read_to_string(path.join("server.crt")).unwrap(),
            server_key: std::fs::read_to_string(path.join("server.key")).unwrap(),
            _dir: dir,
        }
    }
}

/// Self-signed server certificates as `openssl req -x509` makes them: with
/// openssl's default configuration each is also a CA certificate
/// (basicConstraints CA:TRUE), as in PostgreSQL's documentation.
pub struct SelfSigned {
    dir: tempfile::TempDir,
}

impl SelfSigned {
    pub fn new() -> SelfSigned {
        SelfSigned {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// Makes `NAME.crt` and `NAME.key` for subject `CN=common_name` with
    /// the extra `-addext` extensions; returns the certificate's path.
    pub fn make(&self, name: &str, common_name: &str, extensions: &[&str]) -> PathBuf {
        let (cert, key) = (format!("{name}.crt"), format!("{name}.key"));
        let subject = format!("/CN={common_name}");
        let mut args = vec![
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &cert,
            "-days",
            "3",
            "-subj",
            &subject,
        ];
        for extension in extensions {
            args.extend(["-addext", extension]);
        }
        openssl(self.dir.path(), &args);
        self.dir.path().join(cert)
    }

    /// The contents of a file made here (`NAME.crt`, `NAME.key`).
    pub fn read(&self, file: &str) -> Vec<u8> {
        std::fs::read(self.dir.path().join(file)).unwrap()
    }
}
