//! Certificate revocation lists: the certificates a cluster's CA no longer vouches for.
//!
//! `etchctl certs revoke` keeps one list per certificate directory, `DIR/crl.pem`, signed by
//! the CA in `DIR/ca.key`: [`revoke`] adds a certificate's serial number to it (making the
//! list if there is none), keeps the earlier entries and increments the CRL number. A node
//! reads a list with [`load`], which refuses one that no CA of the node's bundle signed: such
//! a list says nothing about the cluster's certificates, and the operator who passed it
//! would believe something revoked that is not.

use std::path::{Path, PathBuf};

use rcgen::{
    CertificateRevocationListParams, KeyIdMethod, RevocationReason, RevokedCertParams, SerialNumber,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer};
use x509_parser::certificate::X509Certificate;
use x509_parser::revocation_list::CertificateRevocationList;

use crate::pki::{Authority, PkiError, Result, check_file_name, read_bytes, write_file_atomic};

/// The list's file name in a certificate directory, beside `ca.crt`.
pub const CRL_FILE: &str = "crl.pem";

/// What [`revoke`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Revocation {
    /// The list written (or that already held the certificate).
    pub path: PathBuf,
    /// The certificate's serial number, lower-case hex bytes joined by `:`.
    pub serial: String,
    /// The list's CRL number after the change.
    pub crl_number: u64,
    /// How many certificates the list revokes now.
    pub revoked: usize,
    /// The certificate was in the list already; nothing was written.
    pub already: bool,
}

/// Adds the certificate `DIR/NAME.crt` to `DIR/crl.pem`, signed by the CA in `DIR/ca.crt`
/// and `DIR/ca.key`. The file is replaced whole (written beside it, then renamed), so a node
/// that reads it meanwhile sees the old list or the new one.
///
/// # Errors
///
/// A missing or unreadable file; `NAME` is `ca` or the certificate is a CA; the certificate
/// or an existing list was not issued by this CA.
pub fn revoke(dir: &Path, name: &str) -> Result<Revocation> {
    check_file_name(name)?;
    let crt = dir.join(format!("{name}.crt"));
    let cert_der = first_cert(&crt)?;
    let ca_crt = dir.join("ca.crt");
    let ca = Authority::load(&ca_crt, &dir.join("ca.key"))?;
    let ca_der = first_cert(&ca_crt)?;
    let ca_x509 = parse_cert(&ca_crt, &ca_der)?;
    let cert = parse_cert(&crt, &cert_der)?;
    if cert.is_ca() {
        return Err(refused(
            &crt,
            "it is a CA certificate; revoke the certificates it issued, or take it out of the nodes' CA bundle",
        ));
    }
    if cert.issuer().as_raw() != ca_x509.subject().as_raw()
        || cert.verify_signature(Some(ca_x509.public_key())).is_err()
    {
        return Err(refused(
            &crt,
            &format!("it was not issued by the CA in {}", ca_crt.display()),
        ));
    }
    let serial = cert.serial.to_bytes_be();
    let path = dir.join(CRL_FILE);
    let (mut revoked, number) = if path.exists() {
        previous(&path, &ca_x509)?
    } else {
        (Vec::new(), 0)
    };
    let already = revoked.iter().any(|r| r.serial_number.as_ref() == serial);
    let crl_number = if already { number } else { number + 1 };
    if !already {
        revoked.push(RevokedCertParams {
            serial_number: SerialNumber::from(serial.clone()),
            revocation_time: x509_parser::time::ASN1Time::now().to_datetime(),
            reason_code: None,
            invalidity_date: None,
        });
        let year = crate::pki::current_year();
        let params = CertificateRevocationListParams {
            this_update: x509_parser::time::ASN1Time::now().to_datetime(),
            // etch does not enforce nextUpdate (see ARCHITECTURE.md); other tools may.
            next_update: rcgen::date_time_ymd(year + 10, 1, 1),
            crl_number: SerialNumber::from(crl_number),
            issuing_distribution_point: None,
            revoked_certs: revoked.clone(),
            key_identifier_method: KeyIdMethod::Sha256,
        };
        let crl = params.signed_by(ca.issuer())?;
        write_file_atomic(&path, &crl.pem()?)?;
    }
    Ok(Revocation {
        path,
        serial: hex(&serial),
        crl_number,
        revoked: revoked.len(),
        already,
    })
}

/// The entries and CRL number of the list at `path`, which `ca` must have signed.
fn previous(path: &Path, ca: &X509Certificate<'_>) -> Result<(Vec<RevokedCertParams>, u64)> {
    let ders = read_crls(path)?;
    let [der] = ders.as_slice() else {
        return Err(crl_error(
            path,
            "holds more than one list; etchctl keeps one list per CA",
        ));
    };
    let crl = parse_crl(path, der)?;
    if crl.issuer().as_raw() != ca.subject().as_raw()
        || crl.verify_signature(ca.public_key()).is_err()
    {
        return Err(crl_error(path, "is not signed by the CA of this directory"));
    }
    let number = match crl.crl_number() {
        Some(n) => u64::try_from(n).map_err(|_| crl_error(path, "has a CRL number over 2^64"))?,
        None => 0,
    };
    let entries = crl
        .iter_revoked_certificates()
        .map(|r| RevokedCertParams {
            serial_number: SerialNumber::from(r.serial().to_bytes_be()),
            revocation_time: r.revocation_date.to_datetime(),
            reason_code: r.reason_code().and_then(|(_, code)| reason(code.0)),
            invalidity_date: r.invalidity_date().map(|(_, t)| t.to_datetime()),
        })
        .collect();
    Ok((entries, number))
}

/// rcgen's name for an RFC 5280 reason code.
fn reason(code: u8) -> Option<RevocationReason> {
    use RevocationReason::*;
    Some(match code {
        0 => Unspecified,
        1 => KeyCompromise,
        2 => CaCompromise,
        3 => AffiliationChanged,
        4 => Superseded,
        5 => CessationOfOperation,
        6 => CertificateHold,
        8 => RemoveFromCrl,
        9 => PrivilegeWithdrawn,
        10 => AaCompromise,
        _ => return None,
    })
}

/// Reads the lists in the PEM file at `path` and checks that each is signed by one of the
/// CA certificates `cas` (a node's bundle).
///
/// # Errors
///
/// The file is missing, holds no list, a list does not parse, or no CA of the bundle
/// signed it.
pub fn load(
    path: &Path,
    cas: &[CertificateDer<'static>],
) -> Result<Vec<CertificateRevocationListDer<'static>>> {
    let ders = read_crls(path)?;
    let cas: Vec<X509Certificate<'_>> = cas
        .iter()
        .filter_map(|ca| x509_parser::parse_x509_certificate(ca.as_ref()).ok())
        .map(|(_, ca)| ca)
        .collect();
    for der in &ders {
        let crl = parse_crl(path, der)?;
        let signed = cas.iter().any(|ca| {
            ca.subject().as_raw() == crl.issuer().as_raw()
                && crl.verify_signature(ca.public_key()).is_ok()
        });
        if !signed {
            return Err(crl_error(
                path,
                &format!(
                    "is signed by {:?}, which is not a CA of the bundle (a list of another cluster?)",
                    crl.issuer().to_string()
                ),
            ));
        }
    }
    Ok(ders)
}

fn read_crls(path: &Path) -> Result<Vec<CertificateRevocationListDer<'static>>> {
    let bytes = read_bytes(path)?;
    let ders: Vec<_> = CertificateRevocationListDer::pem_slice_iter(&bytes)
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| crl_error(path, &format!("is not valid PEM: {e}")))?;
    if ders.is_empty() {
        return Err(PkiError::Pem {
            path: path.to_owned(),
            what: "certificate revocation list (X509 CRL)",
        });
    }
    Ok(ders)
}

fn parse_crl<'a>(
    path: &Path,
    der: &'a CertificateRevocationListDer<'_>,
) -> Result<CertificateRevocationList<'a>> {
    match x509_parser::parse_x509_crl(der.as_ref()) {
        Ok(([], crl)) => Ok(crl),
        Ok(_) => Err(crl_error(path, "has trailing bytes after its list")),
        Err(e) => Err(crl_error(path, &format!("does not parse: {e}"))),
    }
}

fn first_cert(path: &Path) -> Result<CertificateDer<'static>> {
    CertificateDer::pem_slice_iter(&read_bytes(path)?)
        .next()
        .and_then(|c| c.ok())
        .ok_or_else(|| PkiError::Pem {
            path: path.to_owned(),
            what: "certificate",
        })
}

fn parse_cert<'a>(path: &Path, der: &'a CertificateDer<'_>) -> Result<X509Certificate<'a>> {
    x509_parser::parse_x509_certificate(der.as_ref())
        .map(|(_, c)| c)
        .map_err(|e| PkiError::Parse(format!("{}: {e}", path.display())))
}

fn crl_error(path: &Path, reason: &str) -> PkiError {
    PkiError::Crl {
        path: path.to_owned(),
        reason: reason.to_owned(),
    }
}

fn refused(path: &Path, reason: &str) -> PkiError {
    PkiError::Parse(format!("will not revoke {}: {reason}", path.display()))
}

/// `0a:1b:...`, as openssl prints serial numbers.
fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::{InitOptions, init_dir};

    fn dir_with(clients: &[&str]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        let opts = InitOptions {
            nodes: vec!["n1".into()],
            clients: clients.iter().map(|c| c.to_string()).collect(),
            hosts: vec!["127.0.0.1".into()],
        };
        init_dir(dir.path(), &opts).expect("init");
        dir
    }

    fn ca(dir: &Path) -> Vec<CertificateDer<'static>> {
        vec![first_cert(&dir.join("ca.crt")).expect("ca")]
    }

    #[test]
    fn revoking_keeps_earlier_entries_and_counts_up() {
        let dir = dir_with(&["alice", "bob"]);
        let first = revoke(dir.path(), "alice").expect("revoke alice");
        assert_eq!(
            (first.crl_number, first.revoked, first.already),
            (1, 1, false)
        );
        let second = revoke(dir.path(), "bob").expect("revoke bob");
        assert_eq!((second.crl_number, second.revoked), (2, 2));
        let again = revoke(dir.path(), "alice").expect("again");
        assert!(again.already);
        assert_eq!((again.crl_number, again.revoked), (2, 2));
        let ders = load(&dir.path().join(CRL_FILE), &ca(dir.path())).expect("load");
        let crl = parse_crl(Path::new("x"), &ders[0]).expect("parse");
        let serials: Vec<String> = crl
            .iter_revoked_certificates()
            .map(|r| hex(&r.serial().to_bytes_be()))
            .collect();
        assert_eq!(serials, vec![first.serial, second.serial]);
    }

    #[test]
    fn the_ca_missing_files_and_strangers_are_refused() {
        let dir = dir_with(&["alice"]);
        let err = revoke(dir.path(), "ca").expect_err("ca");
        assert!(
            err.to_string().contains("not a usable certificate name"),
            "{err}"
        );
        let err = revoke(dir.path(), "nobody").expect_err("missing");
        assert!(err.to_string().contains("nobody.crt"), "{err}");
        // A certificate of another CA, copied in.
        let other = dir_with(&["mallory"]);
        for ext in ["crt", "key"] {
            std::fs::copy(
                other.path().join(format!("mallory.{ext}")),
                dir.path().join(format!("mallory.{ext}")),
            )
            .expect("copy");
        }
        let err = revoke(dir.path(), "mallory").expect_err("stranger");
        assert!(err.to_string().contains("not issued by the CA"), "{err}");
        // A list of another CA is not extended, and a node refuses to load it.
        revoke(other.path(), "mallory").expect("revoke in the other dir");
        std::fs::copy(other.path().join(CRL_FILE), dir.path().join(CRL_FILE)).expect("copy");
        let err = revoke(dir.path(), "alice").expect_err("foreign list");
        assert!(err.to_string().contains("not signed by the CA"), "{err}");
        let err = load(&dir.path().join(CRL_FILE), &ca(dir.path())).expect_err("foreign");
        assert!(err.to_string().contains("not a CA of the bundle"), "{err}");
    }

    #[test]
    fn malformed_lists_are_refused() {
        let dir = dir_with(&[]);
        let path = dir.path().join(CRL_FILE);
        std::fs::write(&path, "not a list\n").expect("write");
        let err = load(&path, &ca(dir.path())).expect_err("no list");
        assert!(
            err.to_string().contains("no certificate revocation list"),
            "{err}"
        );
        std::fs::write(
            &path,
            "-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n",
        )
        .expect("write");
        let err = load(&path, &ca(dir.path())).expect_err("garbage");
        assert!(err.to_string().contains("does not parse"), "{err}");
    }
}
