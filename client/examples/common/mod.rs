//! What every example shares: where the node is.

use etch_client::{ClientOptions, TlsFiles};

/// The embedded defaults (`etchd` with no flags, run from this directory: 127.0.0.1:7379
/// and `./etch-data/certs`), unless `ETCH_ENDPOINTS` (comma separated) or `ETCH_CERTS` (a
/// directory with `ca.crt`, `root.crt` and `root.key`) say otherwise.
pub fn options() -> ClientOptions {
    let endpoints = std::env::var("ETCH_ENDPOINTS").unwrap_or_else(|_| "127.0.0.1:7379".into());
    let certs = std::env::var("ETCH_CERTS").unwrap_or_else(|_| "./etch-data/certs".into());
    ClientOptions::new(endpoints.split(','), TlsFiles::in_dir(certs, "root"))
}
