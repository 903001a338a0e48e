//! Global flags and what every command gets from them: a client and a printer.

use std::io::{self, Write};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use clap::Args;
use etch_client::proto::pki::PkiError;
use etch_client::{Client, ClientOptions, TlsFiles};

use crate::duration;
use crate::print::{Format, Printer};

/// Flags accepted by every command; each also reads an `ETCHCTL_*` environment variable.
#[derive(Args, Clone, Debug)]
#[command(next_help_heading = "Global options")]
pub struct GlobalArgs {
    /// Comma-separated node client addresses (host:port).
    #[arg(
        long,
        global = true,
        env = "ETCHCTL_ENDPOINTS",
        value_delimiter = ',',
        default_value = "127.0.0.1:7379"
    )]
    pub endpoints: Vec<String>,
    /// The cluster CA certificate (PEM).
    #[arg(
        long,
        global = true,
        env = "ETCHCTL_CACERT",
        default_value = "./etch-data/certs/ca.crt"
    )]
    pub cacert: PathBuf,
    /// This client's certificate (PEM); its common name is the principal.
    #[arg(
        long,
        global = true,
        env = "ETCHCTL_CERT",
        default_value = "./etch-data/certs/root.crt"
    )]
    pub cert: PathBuf,
    /// This client's private key (PEM).
    #[arg(
        long = "key",
        id = "key_file",
        value_name = "KEY",
        global = true,
        env = "ETCHCTL_KEY",
        default_value = "./etch-data/certs/root.key"
    )]
    pub key_file: PathBuf,
    /// Time allowed for a command's request, retries included (e.g. 5s, 500ms).
    #[arg(long, global = true, env = "ETCHCTL_COMMAND_TIMEOUT", default_value = "5s", value_parser = duration::parse)]
    pub command_timeout: Duration,
    /// Time allowed to connect to one endpoint.
    #[arg(long, global = true, env = "ETCHCTL_DIAL_TIMEOUT", default_value = "2s", value_parser = duration::parse)]
    pub dial_timeout: Duration,
    /// Output format.
    #[arg(
        short = 'w',
        long,
        global = true,
        env = "ETCHCTL_WRITE_OUT",
        value_enum,
        default_value = "simple"
    )]
    pub write_out: Format,
    /// Print keys and values as hex-escaped bytes.
    #[arg(long, global = true, env = "ETCHCTL_HEX")]
    pub hex: bool,
}

/// What a command runs with.
#[derive(Debug)]
pub struct Context {
    pub global: GlobalArgs,
    pub printer: Printer,
}

impl Context {
    pub fn new(global: GlobalArgs) -> Self {
        let printer = Printer {
            format: global.write_out,
            hex: global.hex,
            value_only: false,
        };
        Context { global, printer }
    }

    /// Client options for `endpoints` with the global TLS files and timeouts.
    pub fn options(&self, endpoints: Vec<String>) -> ClientOptions {
        let tls = TlsFiles {
            ca: self.global.cacert.clone(),
            cert: self.global.cert.clone(),
            key: self.global.key_file.clone(),
        };
        ClientOptions::new(endpoints, tls)
            .connect_timeout(self.global.dial_timeout)
            .request_timeout(self.global.command_timeout)
    }

    /// A client connected to the global endpoints.
    pub async fn client(&self) -> Result<Client> {
        connect(self.options(self.global.endpoints.clone())).await
    }

    /// Runs `f` on standard output.
    pub fn print(&self, f: impl FnOnce(&Printer, &mut dyn Write) -> io::Result<()>) -> Result<()> {
        let mut out = io::stdout().lock();
        f(&self.printer, &mut out)?;
        out.flush()?;
        Ok(())
    }
}

/// Connects, with a hint when the certificate files are missing.
pub async fn connect(opts: ClientOptions) -> Result<Client> {
    Client::connect(opts).await.map_err(with_hint)
}

/// Adds what to do about a missing certificate file to the error.
pub fn with_hint(err: etch_client::Error) -> anyhow::Error {
    if let etch_client::Error::Tls(PkiError::Read { path, source }) = &err
        && source.kind() == io::ErrorKind::NotFound
        && path.starts_with("./etch-data/certs")
    {
        return anyhow::anyhow!(
            "cannot read {}: file not found (hint: `etchd` started with no flags creates \
                 ./etch-data/certs; run etchctl from the same directory, or pass --cacert, \
                 --cert and --key)",
            path.display()
        );
    }
    err.into()
}

/// The error and its causes on one line, each cause once: `a: b: c`.
pub fn error_line(err: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if text.is_empty() || line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_cert_names_the_file_and_hints() {
        let err = etch_client::Error::Tls(PkiError::Read {
            path: "./etch-data/certs/ca.crt".into(),
            source: io::Error::from(io::ErrorKind::NotFound),
        });
        let line = error_line(&with_hint(err));
        assert!(
            line.starts_with("cannot read ./etch-data/certs/ca.crt"),
            "{line}"
        );
        assert!(line.contains("`etchd` started with no flags"), "{line}");
    }

    #[test]
    fn causes_are_printed_once() {
        let err = etch_client::Error::Tls(PkiError::Read {
            path: "x.key".into(),
            source: io::Error::from(io::ErrorKind::PermissionDenied),
        });
        let line = error_line(&anyhow::Error::from(err));
        assert_eq!(line, "cannot read x.key: permission denied");
        let connect = etch_client::Error::Connect {
            endpoint: "127.0.0.1:7379".into(),
            source: etch_client::DialError::TimedOut(Duration::from_secs(2)),
        };
        assert_eq!(
            error_line(&anyhow::Error::from(connect)),
            "cannot connect to 127.0.0.1:7379: timed out after 2s (dial timeout)"
        );
    }
}
