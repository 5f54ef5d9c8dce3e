//! Per-route access keys of SPEC §6 compiled for the route table:
//! `allow_ips` / `deny_ips` (§6.7) into prefix sets and `require_claims`
//! (§6.6) into claim entries. A route's own setting replaces the one in
//! `[defaults]`.

use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;

use super::{Compiler, Result};
use crate::config::file::{FileConfig, RouteFile};
use crate::config::keys::KeyPath;
use crate::config::values::Text;
use crate::policy::auth::AuthRequirement;
use crate::policy::ip_list::{IpRule, IpSet};
use crate::policy::require_claims::ClaimEntry;

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

impl Compiler<'_> {
    /// The route's `require_claims`, else the default's; only a route whose
    /// auth accepts a JWT can check claims. The default's applies to the
    /// routes that take one: on a route with `auth = "none"` or only
    /// shared secrets or signatures there are no claims to require (as for
    /// the requests such proofs admit on an any-of route, SPEC §6.6), and
    /// a policy with one public route beside claim-guarded ones must load.
    /// A route's own requirement that it can never check is an error.
    pub(super) fn require_claims(
        &self,
        r: &RouteFile,
        key: &KeyPath,
        file: &FileConfig,
        auth: &AuthRequirement,
    ) -> Result<Vec<ClaimEntry>> {
        let (map, at) = match (&r.require_claims, &file.defaults.require_claims) {
            (Some(own), _) => (own, key.key("require_claims")),
            (None, Some(_)) if !auth.accepts_jwt() => return Ok(Vec::new()),
            (None, Some(inherited)) => (inherited, KeyPath::from("defaults.require_claims")),
            (None, None) => return Ok(Vec::new()),
        };
        let mut entries = Vec::with_capacity(map.len());
        for (claim, values) in map {
            if claim.is_empty() || values.0.iter().any(String::is_empty) {
                return Err(self.err(
                    at.key(claim),
                    "a claim name and its values must not be empty, e.g. role = \"admin\"",
                ));
            }
            entries.push(ClaimEntry::new(claim, values.0.clone()));
        }
        if !entries.is_empty() && !auth.accepts_jwt() {
            return Err(self.err(
                at,
                format!(
                    "route \"{}\" requires claims but its auth (\"{auth}\") accepts no JWT; add \"jwt\" to its auth, or remove require_claims from the route",
                    r.name
                ),
            ));
        }
        Ok(entries)
    }
}
