//! Certificates made by the tests (rcgen, aws-lc-rs): a CA, server and client
//! certificates it signs, and a directory laid out like a Kubernetes Secret volume
//! (`tls.crt -> ..data/tls.crt`, `..data -> ..<version>`) whose content is swapped the
//! way the kubelet swaps it. Not a client: the tests build those.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType, IsCa, KeyPair,
    KeyUsagePurpose,
};

/// A certificate authority that signs server and client certificates.
pub struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A certificate and its private key, as PEM.
#[derive(Clone)]
pub struct Issued {
    pub cert: String,
    pub key: String,
    /// The not-after time, in Unix seconds.
    pub not_after: i64,
}

impl Issued {
    /// The certificate and key in one PEM (what reqwest's `Identity::from_pem` reads).
    pub fn bundle(&self) -> String {
        format!("{}{}", self.cert, self.key)
    }
}

impl Ca {
    pub fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name = named(name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        Self { issuer }
    }

    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A server certificate for `localhost` and 127.0.0.1 that expires in `year`.
    pub fn server(&self, name: &str, year: i32) -> Issued {
        let mut params =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
        params.distinguished_name = named(name);
        params.not_after = rcgen::date_time_ymd(year, 1, 1);
        self.sign(params)
    }

    /// A client certificate named `name`.
    pub fn client(&self, name: &str) -> Issued {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name = named(name);
        self.sign(params)
    }

    fn sign(&self, params: CertificateParams) -> Issued {
        let not_after = params.not_after.unix_timestamp();
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Issued {
            cert: cert.pem(),
            key: key.serialize_pem(),
            not_after,
        }
    }
}

fn named(common_name: &str) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, common_name);
    name
}

/// A directory laid out like a mounted Secret with `tls.crt`, `tls.key` and `ca.crt`.
pub struct SecretVolume {
    pub dir: PathBuf,
    version: usize,
}

impl SecretVolume {
    /// Mounts `server` (and `client_ca`, if any) under `dir`.
    pub fn new(dir: &Path, server: &Issued, client_ca: Option<&Ca>) -> Self {
        let mut volume = Self {
            dir: dir.to_path_buf(),
            version: 0,
        };
        volume.update(server, client_ca);
        for name in ["tls.crt", "tls.key", "ca.crt"] {
            std::os::unix::fs::symlink(format!("..data/{name}"), dir.join(name)).unwrap();
        }
        volume
    }

    /// Swaps in new content as the kubelet does: a new versioned directory, then an
    /// atomic rename of the `..data` symlink. The files' own paths never change.
    pub fn update(&mut self, server: &Issued, client_ca: Option<&Ca>) {
        self.version += 1;
        let version = format!("..v{}", self.version);
        let data = self.dir.join(&version);
        std::fs::create_dir(&data).unwrap();
        std::fs::write(data.join("tls.crt"), &server.cert).unwrap();
        std::fs::write(data.join("tls.key"), &server.key).unwrap();
        let ca = client_ca.map(Ca::pem).unwrap_or_default();
        std::fs::write(data.join("ca.crt"), ca).unwrap();
        let staged = self.dir.join("..data_tmp");
        std::os::unix::fs::symlink(&version, &staged).unwrap();
        std::fs::rename(&staged, self.dir.join("..data")).unwrap();
    }

    pub fn cert_file(&self) -> String {
        self.dir.join("tls.crt").display().to_string()
    }

    pub fn key_file(&self) -> String {
        self.dir.join("tls.key").display().to_string()
    }

    pub fn ca_file(&self) -> String {
        self.dir.join("ca.crt").display().to_string()
    }
}
