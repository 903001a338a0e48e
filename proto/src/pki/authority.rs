//! Making a cluster's CA and its leaves (`etchd`'s embedded default, `etchctl certs`):
//! only with the `authority` feature, so that clients do not build certificate generation.

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};

use super::*;

/// A certificate authority able to issue node and client certificates.
pub struct Authority {
    cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl fmt::Debug for Authority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authority").finish_non_exhaustive()
    }
}

/// A freshly issued certificate and its private key, both PEM.
#[derive(Clone)]
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
}

impl fmt::Debug for Issued {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Issued")
            .field("cert_pem", &self.cert_pem)
            .finish_non_exhaustive()
    }
}

impl Authority {
    /// Makes a new self-signed CA named `name`.
    pub fn generate(name: &str) -> Result<Self> {
        let mut params = CertificateParams::default();
        params.distinguished_name = dn(name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        Ok(Authority {
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        })
    }

    /// Loads an existing CA from its certificate and key files.
    pub fn load(cert: &Path, key: &Path) -> Result<Self> {
        let cert_pem = read_string(cert)?;
        let key_pem = read_string(key)?;
        let key = KeyPair::from_pem(&key_pem)?;
        let issuer = Issuer::from_ca_cert_pem(&cert_pem, key)?;
        Ok(Authority { cert_pem, issuer })
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA private key, PEM.
    pub fn key_pem(&self) -> String {
        self.issuer.key().serialize_pem()
    }

    /// The CA as rcgen signs with it (certificates, revocation lists).
    pub(crate) fn issuer(&self) -> &Issuer<'static, KeyPair> {
        &self.issuer
    }

    /// Issues a node certificate for `name`, valid for the given host names and IP addresses.
    pub fn issue_node(&self, name: &str, hosts: &[String]) -> Result<Issued> {
        let mut params = CertificateParams::new(hosts.to_vec())?;
        params
            .subject_alt_names
            .push(SanType::URI(format!("{NODE_URI_PREFIX}{name}").try_into()?));
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        self.issue(name, params)
    }

    /// Issues a client certificate whose common name (the principal) is `name`.
    pub fn issue_client(&self, name: &str) -> Result<Issued> {
        let mut params = CertificateParams::default();
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.issue(name, params)
    }

    /// Issues a certificate for common name `name` with whatever else `params` says (key
    /// usages, names): for tests and tools that need certificates etch would not issue,
    /// such as ones it must refuse.
    pub fn issue(&self, name: &str, mut params: CertificateParams) -> Result<Issued> {
        params.distinguished_name = dn(name);
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.use_authority_key_identifier_extension = true;
        let year = current_year();
        params.not_before = rcgen::date_time_ymd(year - 1, 1, 1);
        params.not_after = rcgen::date_time_ymd(year + 10, 1, 1);
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// The current calendar year, close enough for validity windows that start a year back.
pub(crate) fn current_year() -> i32 {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    1970 + (secs / 31_556_952) as i32
}

fn dn(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "etch");
    dn.push(DnType::CommonName, common_name);
    dn
}

fn read_string(path: &Path) -> Result<String> {
    fs::read_to_string(path).map_err(|source| PkiError::Read {
        path: path.to_owned(),
        source,
    })
}

/// Writes `contents` to `path`; private keys (`secret`) are readable by their owner only.
fn write_file(path: &Path, contents: &str, secret: bool) -> Result<()> {
    let io = |source| PkiError::Write {
        path: path.to_owned(),
        source,
    };
    #[cfg(unix)]
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(if secret { 0o600 } else { 0o644 })
            .open(path)
            .map_err(io)?;
        file.write_all(contents.as_bytes()).map_err(io)
    }
    #[cfg(not(unix))]
    {
        let _ = secret;
        fs::write(path, contents).map_err(io)
    }
}

/// Replaces `path` with `contents` whole: written to a file beside it, then renamed over it,
/// so that a reader (a node watching the file) never sees half of it.
pub(crate) fn write_file_atomic(path: &Path, contents: &str) -> Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    write_file(&tmp, contents, false)?;
    fs::rename(&tmp, path).map_err(|source| PkiError::Write {
        path: path.to_owned(),
        source,
    })
}

/// What [`init_dir`] should make.
#[derive(Clone, Debug)]
pub struct InitOptions {
    /// Node certificates to issue, by node name.
    pub nodes: Vec<String>,
    /// Client certificates to issue, by principal.
    pub clients: Vec<String>,
    /// Host names and IP addresses the node certificates are valid for.
    pub hosts: Vec<String>,
}

/// Writes `ca.crt`, `ca.key` and `NAME.crt` / `NAME.key` for every node and client into
/// `dir`, creating it. An existing `ca.crt` + `ca.key` in `dir` is reused, so that more
/// certificates can be added to a cluster later. Returns the paths written.
pub fn init_dir(dir: &Path, opts: &InitOptions) -> Result<Vec<PathBuf>> {
    fs::create_dir_all(dir).map_err(|source| PkiError::Write {
        path: dir.to_owned(),
        source,
    })?;
    let (ca_crt, ca_key) = (dir.join("ca.crt"), dir.join("ca.key"));
    let mut written = Vec::new();
    let ca = if ca_crt.exists() && ca_key.exists() {
        Authority::load(&ca_crt, &ca_key)?
    } else {
        // A name of its own, so that a certificate from another cluster's CA is reported as
        // from an unknown issuer rather than as a bad signature.
        let nonce = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let ca = Authority::generate(&format!(
            "etch CA {:x}",
            nonce ^ u128::from(std::process::id())
        ))?;
        write_file(&ca_crt, ca.cert_pem(), false)?;
        write_file(&ca_key, &ca.key_pem(), true)?;
        written.extend([ca_crt, ca_key]);
        ca
    };
    let issued = opts
        .nodes
        .iter()
        .map(|n| Ok::<_, PkiError>((n, ca.issue_node(n, &opts.hosts)?)))
        .chain(opts.clients.iter().map(|c| Ok((c, ca.issue_client(c)?))));
    for item in issued {
        let (name, issued) = item?;
        check_file_name(name)?;
        let (crt, key) = (
            dir.join(format!("{name}.crt")),
            dir.join(format!("{name}.key")),
        );
        write_file(&crt, &issued.cert_pem, false)?;
        write_file(&key, &issued.key_pem, true)?;
        written.extend([crt, key]);
    }
    Ok(written)
}

pub(crate) fn check_file_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name != "ca"
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && !name.starts_with('.');
    if ok {
        Ok(())
    } else {
        Err(PkiError::Parse(format!(
            "{name:?} is not a usable certificate name (letters, digits, '-', '_', '.'; not \"ca\")"
        )))
    }
}
