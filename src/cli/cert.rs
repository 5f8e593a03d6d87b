//! `rangedb cert`: the cluster's certificates, made the way CockroachDB's
//! `cockroach cert` makes them (one CA; node certificates naming every host
//! a node is reached at; one client certificate per user), in --certs-dir.
//! Local files only: no cluster is contacted.

use std::path::Path;
use std::process::ExitCode;

use clap::{Args, Subcommand};

use crate::error::{Error, Result};
use crate::security::certs::{self, Target, CA_LIFETIME_DAYS, CERT_LIFETIME_DAYS};

#[derive(Subcommand, Debug)]
pub enum CertCommand {
    /// Create the cluster's certificate authority: ca.crt (give it to every
    /// node and client) and its key, which signs all other certificates.
    CreateCa {
        #[command(flatten)]
        opts: CertOpts,
    },
    /// Create node.crt/node.key for a node reachable at HOSTS (every DNS
    /// name and IP address clients and other nodes dial, without ports),
    /// e.g. `rangedb cert create-node localhost 127.0.0.1 node1.internal`.
    CreateNode {
        #[arg(required = true, value_name = "HOSTS")]
        hosts: Vec<String>,
        #[command(flatten)]
        opts: CertOpts,
    },
    /// Create client.<USER>.crt/.key: the certificate a client command
    /// presents as USER (`--user`, default root).
    CreateClient {
        user: String,
        #[command(flatten)]
        opts: CertOpts,
    },
    /// List the certificates in --certs-dir: kind, name, hosts, expiry.
    List,
}

#[derive(Args, Debug)]
pub struct CertOpts {
    /// The CA's key [default: <certs-dir>/ca.key]. Keep it off the nodes
    /// in production: only `rangedb cert` needs it.
    #[arg(long, value_name = "FILE")]
    ca_key: Option<std::path::PathBuf>,
    /// Days the certificate is valid [default: 3650 for the CA, 1825 for
    /// others, never beyond the CA's expiry].
    #[arg(long, value_name = "DAYS")]
    lifetime_days: Option<u32>,
    /// Replace existing files (a new CA invalidates every certificate the
    /// old one signed).
    #[arg(long)]
    overwrite: bool,
}

impl CertOpts {
    fn target(self, dir: &Path, default_days: u32) -> Target {
        Target {
            dir: dir.to_path_buf(),
            ca_key: self.ca_key,
            lifetime_days: self.lifetime_days.unwrap_or(default_days),
            overwrite: self.overwrite,
        }
    }
}

pub fn run(dir: Option<&Path>, cmd: CertCommand) -> Result<ExitCode> {
    let dir = dir
        .ok_or_else(|| Error::Config("give --certs-dir <DIR> (or set RANGEDB_CERTS_DIR)".into()))?;
    let written = match cmd {
        CertCommand::CreateCa { opts } => certs::create_ca(&opts.target(dir, CA_LIFETIME_DAYS))?,
        CertCommand::CreateNode { hosts, opts } => {
            certs::create_node(&opts.target(dir, CERT_LIFETIME_DAYS), &hosts)?
        }
        CertCommand::CreateClient { user, opts } => {
            certs::create_client(&opts.target(dir, CERT_LIFETIME_DAYS), &user)?
        }
        CertCommand::List => {
            let all = certs::list(dir)?;
            outln!(
                "{:<22} {:<7} {:<12} {:<11} HOSTS",
                "FILE",
                "KIND",
                "NAME",
                "EXPIRES"
            );
            for c in all {
                let expires = if c.expired {
                    format!("{} (invalid now)", c.expires)
                } else {
                    c.expires
                };
                outln!(
                    "{:<22} {:<7} {:<12} {:<11} {}",
                    c.file,
                    c.kind,
                    c.common_name,
                    expires,
                    c.hosts.join(",")
                );
            }
            return Ok(ExitCode::SUCCESS);
        }
    };
    for f in written {
        let secret = f.extension().is_some_and(|x| x == "key");
        outln!(
            "wrote {}{}",
            f.display(),
            if secret {
                " (private key, mode 0600)"
            } else {
                ""
            }
        );
    }
    Ok(ExitCode::SUCCESS)
}
