//! Per-route access keys of SPEC §6 compiled for the route table:
//! `allow_ips` / `deny_ips` (§6.7) into prefix sets. A route's own list
//! replaces the one in `[defaults]`.

use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;

use super::{Compiler, Result};
use crate::config::file::{FileConfig, RouteFile};
use crate::config::keys::KeyPath;
use crate::config::values::Text;
use crate::policy::ip_list::{IpRule, IpSet};

impl Compiler<'_> {
    /// The route's IP lists: each of its own, else the default's.
    pub(super) fn ip_rule(
        &self,
        r: &RouteFile,
        key: &KeyPath,
        file: &FileConfig,
    ) -> Result<Arc<IpRule>> {
        let defaults = &file.defaults;
        let allow = match &r.allow_ips {
            Some(list) => self.ip_set(list, &key.key("allow_ips"))?,
            None => self.ip_set_opt(defaults.allow_ips.as_deref(), "defaults.allow_ips")?,
        };
        let deny = match &r.deny_ips {
            Some(list) => self.ip_set(list, &key.key("deny_ips"))?,
            None => self.ip_set_opt(defaults.deny_ips.as_deref(), "defaults.deny_ips")?,
        };
        Ok(Arc::new(IpRule { allow, deny }))
    }

    fn ip_set_opt(&self, list: Option<&[Text]>, key: &str) -> Result<Option<IpSet>> {
        match list {
            Some(list) => self.ip_set(list, &key.into()),
            None => Ok(None),
        }
    }

    /// One list of CIDRs or bare addresses; empty means no list.
    fn ip_set(&self, list: &[Text], key: &KeyPath) -> Result<Option<IpSet>> {
        let mut nets = Vec::with_capacity(list.len());
        for (i, entry) in list.iter().enumerate() {
            let text = entry.as_str();
            let net = text
                .parse::<IpNet>()
                .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| {
                    self.err(
                        key.at(i),
                        format!(
                            "\"{text}\" is not an IP address or CIDR; write e.g. \"10.0.0.0/8\", \"192.168.1.5\" or \"2001:db8::/32\""
                        ),
                    )
                })?;
            nets.push(net);
        }
        Ok((!nets.is_empty()).then(|| IpSet::new(nets)))
    }
}
