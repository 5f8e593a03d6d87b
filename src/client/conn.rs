//! One connection as the SDK's calls see it: a channel plus the caller's
//! credentials, which every request carries (`authorization: Bearer
//! <token>`, added by a client interceptor, so no call site can forget).
//! TLS client certificates travel in the channel itself (`crate::tls`).

use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::transport::Channel;
use tonic::{Request, Status};

use crate::error::{Error, Result};
use crate::proto::admin_client::AdminClient;
use crate::proto::auth_client::AuthClient;
use crate::proto::kv_client::KvClient;
use crate::proto::lease_client::LeaseClient;
use crate::proto::txn_client::TxnClient;

/// A bearer token to send with every request, if any (and, in
/// simulation, the identity a TLS certificate would prove: see `tls::SIM_IDENTITY`).
#[derive(Clone, Default)]
pub struct Creds {
    token: Option<MetadataValue<Ascii>>,
    #[cfg(madsim)]
    sim_identity: Option<MetadataValue<Ascii>>,
}

impl Creds {
    pub fn bearer(token: Option<&str>) -> Result<Self> {
        let Some(t) = token else {
            return Ok(Creds::default());
        };
        let v = MetadataValue::try_from(format!("Bearer {t}"))
            .map_err(|_| Error::InvalidArgument("the token is not printable ASCII".into()))?;
        Ok(Creds {
            token: Some(v),
            #[cfg(madsim)]
            sim_identity: None,
        })
    }

    /// The credentials of a client with these options.
    pub fn of(token: Option<&str>, tls: Option<&crate::tls::TlsMaterial>) -> Result<Self> {
        #[allow(unused_mut)]
        let mut c = Self::bearer(token)?;
        #[cfg(madsim)]
        {
            c.sim_identity = tls
                .filter(|t| t.has_identity())
                .and_then(|t| std::str::from_utf8(&t.cert_pem).ok())
                .and_then(|s| MetadataValue::try_from(s).ok());
        }
        #[cfg(not(madsim))]
        let _ = tls;
        Ok(c)
    }
}

impl Interceptor for Creds {
    fn call(&mut self, mut r: Request<()>) -> std::result::Result<Request<()>, Status> {
        if let Some(v) = &self.token {
            r.metadata_mut().insert("authorization", v.clone());
        }
        #[cfg(madsim)]
        if let Some(v) = &self.sim_identity {
            r.metadata_mut().insert(crate::tls::SIM_IDENTITY, v.clone());
        }
        Ok(r)
    }
}

#[cfg(not(madsim))]
type Svc = tonic::service::interceptor::InterceptedService<Channel, Creds>;
#[cfg(not(madsim))]
pub type Kv = KvClient<Svc>;
#[cfg(not(madsim))]
pub type Txn = TxnClient<Svc>;
#[cfg(not(madsim))]
pub type Admin = AdminClient<Svc>;
#[cfg(not(madsim))]
pub type Auth = AuthClient<Svc>;
#[cfg(not(madsim))]
pub type Lease = LeaseClient<Svc>;
#[cfg(madsim)]
pub type Kv = KvClient<Channel, Creds>;
#[cfg(madsim)]
pub type Txn = TxnClient<Channel, Creds>;
#[cfg(madsim)]
pub type Admin = AdminClient<Channel, Creds>;
#[cfg(madsim)]
pub type Auth = AuthClient<Channel, Creds>;
#[cfg(madsim)]
pub type Lease = LeaseClient<Channel, Creds>;

/// A channel to one node with the caller's credentials.
#[derive(Clone)]
pub struct Conn {
    pub(crate) ch: Channel,
    pub(crate) creds: Creds,
}

impl Conn {
    pub fn kv(self) -> Kv {
        KvClient::with_interceptor(self.ch, self.creds)
    }

    pub fn txn(self) -> Txn {
        TxnClient::with_interceptor(self.ch, self.creds)
    }

    pub fn admin(self) -> Admin {
        AdminClient::with_interceptor(self.ch, self.creds)
    }

    pub fn auth(self) -> Auth {
        AuthClient::with_interceptor(self.ch, self.creds)
    }

    pub fn lease(self) -> Lease {
        LeaseClient::with_interceptor(self.ch, self.creds)
    }
}
