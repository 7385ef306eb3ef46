//! Certificates for the TLS tests, made by the openssl CLI (installed by `tests/run-all.sh`):
//! a CA per test, and server and client certificates it signs. Files are PEM, laid out the
//! way a Kubernetes Secret volume shows a `kubernetes.io/tls` Secret (`tls.crt`, `tls.key`,
//! `ca.crt` behind a `..data` symlink), so that rotation can be tested the way the kubelet
//! does it. Not a general PKI: short-lived P-256 certificates for 127.0.0.1 only.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A certificate and its key, as PEM files.
#[derive(Debug, Clone)]
pub struct Issued {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A test CA in its own directory.
pub struct Ca {
    dir: PathBuf,
    name: String,
    pub cert: PathBuf,
    key: PathBuf,
    serial: u32,
}

fn path(p: &Path) -> &str {
    p.to_str().expect("test paths are UTF-8")
}

fn openssl(args: &[&str], dir: &Path) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "the openssl CLI is needed for the TLS tests (tests/run-all.sh installs it): {e}"
            )
        });
    assert!(
        out.status.success(),
        "openssl {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Ca {
    /// A new self-signed CA named `name`, its files in `dir/<name>/`.
    pub fn new(dir: &Path, name: &str) -> Ca {
        let dir = dir.join(name);
        std::fs::create_dir_all(&dir).expect("CA dir");
        openssl(
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-keyout",
                "ca.key",
                "-out",
                "ca.crt",
                "-days",
                "2",
                "-subj",
                &format!("/CN={name}"),
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
            &dir,
        );
        Ca {
            cert: dir.join("ca.crt"),
            key: dir.join("ca.key"),
            dir,
            name: name.into(),
            serial: 1,
        }
    }

    /// A server certificate for 127.0.0.1 and localhost.
    pub fn server(&mut self, name: &str) -> Issued {
        self.issue(
            name,
            "serverAuth",
            "subjectAltName=IP:127.0.0.1,DNS:localhost",
        )
    }

    /// A client certificate (for mTLS) with common name `name`.
    pub fn client(&mut self, name: &str) -> Issued {
        self.issue(name, "clientAuth", &format!("subjectAltName=DNS:{name}"))
    }

    fn issue(&mut self, name: &str, usage: &str, san: &str) -> Issued {
        self.serial += 1;
        let (key, csr, cert) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.crt"),
        );
        openssl(
            &[
                "req",
                "-new",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-keyout",
                &key,
                "-out",
                &csr,
                "-subj",
                &format!("/CN={name}"),
            ],
            &self.dir,
        );
        let ext = format!("{name}.ext");
        std::fs::write(
            self.dir.join(&ext),
            format!("{san}\nextendedKeyUsage={usage}\nbasicConstraints=CA:FALSE\n"),
        )
        .expect("extensions file");
        openssl(
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                path(&self.cert),
                "-CAkey",
                path(&self.key),
                "-set_serial",
                &self.serial.to_string(),
                "-days",
                "1",
                "-out",
                &cert,
                "-extfile",
                &ext,
            ],
            &self.dir,
        );
        Issued {
            cert: self.dir.join(cert),
            key: self.dir.join(key),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

/// A directory shaped like a mounted `kubernetes.io/tls` Secret: `tls.crt`, `tls.key` and
/// `ca.crt` are symlinks into `..data`, which points at a timestamped directory; an update
/// writes a new directory and renames `..data` over the old link, as the kubelet does.
pub struct SecretVolume {
    pub dir: PathBuf,
    generation: u32,
}

impl SecretVolume {
    pub fn new(dir: &Path, issued: &Issued, ca: &Path) -> SecretVolume {
        let mut volume = SecretVolume {
            dir: dir.to_path_buf(),
            generation: 0,
        };
        std::fs::create_dir_all(dir).expect("secret volume dir");
        volume.update(issued, ca);
        for file in ["tls.crt", "tls.key", "ca.crt"] {
            std::os::unix::fs::symlink(format!("..data/{file}"), dir.join(file))
                .expect("secret volume symlink");
        }
        volume
    }

    /// Swaps in new contents atomically.
    pub fn update(&mut self, issued: &Issued, ca: &Path) {
        self.generation += 1;
        let version = format!("..2026_12_03_v{}", self.generation);
        let target = self.dir.join(&version);
        std::fs::create_dir_all(&target).expect("secret version dir");
        for (from, to) in [(&issued.cert, "tls.crt"), (&issued.key, "tls.key")] {
            std::fs::copy(from, target.join(to)).expect("copy secret file");
        }
        std::fs::copy(ca, target.join("ca.crt")).expect("copy CA");
        let tmp = self.dir.join("..data_tmp");
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(&version, &tmp).expect("symlink ..data_tmp");
        std::fs::rename(&tmp, self.dir.join("..data")).expect("swap ..data");
    }

    /// Writes `text` as the certificate in place (a bad update).
    pub fn corrupt_certificate(&mut self, text: &str) {
        self.generation += 1;
        let version = format!("..2026_12_03_v{}", self.generation);
        let target = self.dir.join(&version);
        std::fs::create_dir_all(&target).expect("secret version dir");
        let current = self.dir.join("..data");
        for file in ["tls.key", "ca.crt"] {
            std::fs::copy(current.join(file), target.join(file)).expect("copy secret file");
        }
        std::fs::write(target.join("tls.crt"), text).expect("write bad certificate");
        let tmp = self.dir.join("..data_tmp");
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(&version, &tmp).expect("symlink ..data_tmp");
        std::fs::rename(&tmp, self.dir.join("..data")).expect("swap ..data");
    }

    pub fn cert(&self) -> PathBuf {
        self.dir.join("tls.crt")
    }
    pub fn key(&self) -> PathBuf {
        self.dir.join("tls.key")
    }
    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }
}

/// The serial number (hex, as openssl prints it) of the certificate `127.0.0.1:port`
/// serves now, from a fresh handshake by `openssl s_client`.
pub fn served_serial(port: u16) -> Option<String> {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "openssl s_client -connect 127.0.0.1:{port} -servername localhost </dev/null 2>/dev/null | openssl x509 -noout -serial"
        ))
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.trim().strip_prefix("serial=").map(str::to_owned)
}

/// The serial number of the certificate in `path`.
pub fn file_serial(path: &Path) -> String {
    let out = Command::new("openssl")
        .args(["x509", "-noout", "-serial", "-in"])
        .arg(path)
        .output()
        .expect("the openssl CLI is needed for the TLS tests (tests/run-all.sh installs it)");
    assert!(
        out.status.success(),
        "openssl x509 -serial -in {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .trim_start_matches("serial=")
        .to_owned()
}
