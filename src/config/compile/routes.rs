//! `[[routes]]` and `[defaults]` compiled into the route table, and the
//! headers every request is stripped of.

use std::collections::HashSet;
use std::sync::Arc;

use http::Method;

use super::{Compiler, Result};
use crate::config::file::{FileConfig, RateLimitRuleFile, RouteFile};
use crate::config::keys::KeyPath;
use crate::config::values::Text;
use crate::policy::auth::{AuthPolicy, AuthRequirement};
use crate::policy::forward::StrippedHeaders;
use crate::policy::headers::SecurityHeaders;
use crate::policy::ratelimit::{LimitKey, RateLimitRule};
use crate::policy::request_id::RequestIdPolicy;
use crate::policy::sanitize;
use crate::policy::tenant::TenantRule;
use crate::route::{Pattern, Route, RouteTable};

/// What every route inherits unless it sets its own, compiled once.
struct Inherited {
    auth: AuthRequirement,
    forward_claims: crate::policy::auth::claims::ForwardClaims,
    security_headers: SecurityHeaders,
}

impl Compiler<'_> {
    pub(super) fn rate_limits(
        &self,
        rules: &[RateLimitRuleFile],
        key: &KeyPath,
        tenant_claim: Option<&str>,
    ) -> Result<Vec<RateLimitRule>> {
        let mut out = Vec::new();
        for (i, r) in rules.iter().enumerate() {
            let key = key.at(i);
            let by = LimitKey::parse(r.by.as_str(), tenant_claim)
                .map_err(|m| self.err(key.key("by"), m))?;
            if r.limit == 0 {
                return Err(self.err(key.key("limit"), "must be at least 1"));
            }
            self.at_least_a_millisecond(r.per.0, key.key("per"))?;
            let burst = r.burst.unwrap_or(r.limit);
            if burst == 0 {
                return Err(self.err(key.key("burst"), "must be at least 1"));
            }
            self.bucket_span_bounded(r.per.0, r.limit, burst, key.key("burst"))?;
            out.push(RateLimitRule {
                by,
                by_label: r.by.as_str().into(),
                limit: r.limit,
                per: r.per.0,
                burst,
                shadow: r.shadow,
                tier_claim: r.tier_claim.as_ref().map(|c| c.as_str().to_string()),
                tiers: self.tiers(r, &key)?,
            });
        }
        Ok(out)
    }

    pub(super) fn routes(
        &self,
        file: &FileConfig,
        base_headers: &SecurityHeaders,
    ) -> Result<RouteTable> {
        let inherited = Inherited {
            auth: AuthRequirement::parse(&file.defaults.auth.0)
                .map_err(|m| self.err("defaults.auth", m))?,
            forward_claims: match &file.auth.jwt {
                Some(jwt) => {
                    self.forward_claims(&jwt.forward_claims, &"auth.jwt.forward_claims".into())?
                }
                None => Vec::new().into(),
            },
            security_headers: base_headers.clone(),
        };
        if file.routes.is_empty() {
            return Err(self.err("routes", "no [[routes]]: every request would be 404; add at least one (path = \"/**\" passes everything)"));
        }
        let mut names = HashSet::new();
        let mut routes = Vec::new();
        for i in 0..file.routes.len() {
            let route = self.route(i, file, &inherited)?;
            if !names.insert(route.name.clone()) {
                return Err(self.err(
                    format!("routes[{i}].name"),
                    format!(
                        "route name \"{}\" is used twice; names must be unique",
                        route.name
                    ),
                ));
            }
            routes.push(route);
        }
        RouteTable::new(routes).map_err(|(later, earlier)| {
            let r = &file.routes[later];
            let e = &file.routes[earlier];
            self.err(
                format!("routes[{later}].path"),
                format!(
                    "route \"{}\" ({}) can never match: the earlier route \"{}\" ({}) takes every request it would; move it above, or narrow the earlier route's path or methods",
                    r.name, r.path, e.name, e.path
                ),
            )
        })
    }

    fn route(&self, i: usize, file: &FileConfig, inherited: &Inherited) -> Result<Route> {
        let r = &file.routes[i];
        let key = KeyPath::from("routes").at(i);
        let name = self.route_name(r, &key)?;
        let pattern = self.pattern(r, &key)?;
        let methods = self.methods(r, &key)?;
        let auth = self.route_auth(r, &key, file, inherited)?;
        let tenant = self.tenant(r, &key, &pattern, &auth)?;
        let tenant_claim = tenant.as_ref().map(|t| t.claim.as_str());
        let require_claims = self.require_claims(r, &key, file, &auth)?;
        let rate_limits = match &r.rate_limits {
            Some(rules) => self.rate_limits(rules, &key.key("rate_limits"), tenant_claim)?,
            None => self.rate_limits(
                &file.defaults.rate_limits,
                &"defaults.rate_limits".into(),
                tenant_claim,
            )?,
        };
        let security_headers = match &r.security_headers {
            None => Arc::new(inherited.security_headers.clone()),
            Some(overrides) => Arc::new(self.security_headers(
                &file.security_headers.merged(overrides),
                &key.key("security_headers"),
            )?),
        };
        let forward_claims = match &r.forward_claims {
            Some(claims) => self.forward_claims(claims, &key.key("forward_claims"))?,
            None => inherited.forward_claims.clone(),
        };
        // `defaults.timeout` was checked once, in `compile`.
        let timeout = match r.timeout {
            Some(own) => {
                self.at_least_a_millisecond(own.0, key.key("timeout"))?;
                own.0
            }
            None => file.defaults.timeout.0,
        };
        Ok(Route {
            id: i,
            name: name.into(),
            pattern,
            methods,
            auth,
            tenant,
            timeout,
            max_body: r.max_body.unwrap_or(file.defaults.max_body).0,
            rate_limits,
            cors: r.cors.unwrap_or(true),
            security_headers,
            retry: r.retry.unwrap_or(true),
            forward_claims,
            strip_prefix: self.strip_prefix(r.strip_prefix.as_ref(), &key)?,
            ips: self.ip_rule(r, &key, file)?,
            require_claims,
            series: Default::default(),
        })
    }

    fn route_name<'r>(&self, r: &'r RouteFile, key: &KeyPath) -> Result<&'r str> {
        let name = r.name.as_str();
        let allowed = |c: char| c.is_ascii_alphanumeric() || "-_.:".contains(c);
        if name.is_empty() || !name.chars().all(allowed) {
            return Err(self.err(
                key.key("name"),
                format!("\"{name}\" is not a route name; use letters, digits, - _ . :"),
            ));
        }
        Ok(name)
    }

    fn pattern(&self, r: &RouteFile, key: &KeyPath) -> Result<Pattern> {
        let path_text = r.path.as_str();
        let canonical = sanitize::canonicalize_pattern(path_text)
            .map_err(|why| self.err(key.key("path"), format!("\"{path_text}\": {why}")))?;
        Pattern::parse(&canonical).map_err(|m| self.err(key.key("path"), m))
    }

    fn methods(&self, r: &RouteFile, key: &KeyPath) -> Result<Option<Vec<Method>>> {
        let Some(list) = &r.methods else {
            return Ok(None);
        };
        let key = key.key("methods");
        if list.is_empty() {
            return Err(self.err(key, "is empty; leave it out to accept every method"));
        }
        let mut methods = Vec::new();
        for (i, m) in list.iter().enumerate() {
            let upper = m.as_str().to_ascii_uppercase();
            let method = Method::from_bytes(upper.as_bytes())
                .map_err(|_| self.err(key.at(i), format!("\"{m}\" is not an HTTP method")))?;
            if method == Method::CONNECT {
                return Err(self.err(
                    key.at(i),
                    "CONNECT is never served (palisade does not tunnel); remove it",
                ));
            }
            methods.push(method);
        }
        Ok(Some(methods))
    }

    fn route_auth(
        &self,
        r: &RouteFile,
        key: &KeyPath,
        file: &FileConfig,
        inherited: &Inherited,
    ) -> Result<AuthRequirement> {
        let at = key.key("auth");
        let auth = match &r.auth {
            Some(a) => AuthRequirement::parse(&a.0).map_err(|m| self.err(&at, m))?,
            None => inherited.auth.clone(),
        };
        if auth.accepts_jwt() && file.auth.jwt.is_none() {
            return Err(self.err(at, format!(
                "route \"{}\" requires a JWT (auth = \"{auth}\"{}) but [auth.jwt] is not configured; add [auth.jwt], or set auth = \"none\" explicitly to run without auth",
                r.name,
                if r.auth.is_none() { ", inherited from [defaults]" } else { "" }
            )));
        }
        for secret in auth.secret_names() {
            if !file.auth.secrets.contains_key(secret) {
                return Err(self.err(
                    at,
                    format!("secret \"{secret}\" is not defined; add [auth.secrets.{secret}]"),
                ));
            }
        }
        for name in auth.hmac_names() {
            if !file.auth.hmac.contains_key(name) {
                return Err(self.err(
                    &at,
                    format!("signed webhook \"{name}\" is not defined; add [auth.hmac.{name}]"),
                ));
            }
        }
        Ok(auth)
    }

    fn tenant(
        &self,
        r: &RouteFile,
        key: &KeyPath,
        pattern: &Pattern,
        auth: &AuthRequirement,
    ) -> Result<Option<TenantRule>> {
        let Some(t) = &r.tenant else {
            return Ok(None);
        };
        let rule = TenantRule {
            param: t.param.as_str().to_string(),
            claim: t.claim.as_str().to_string(),
        };
        let key = key.key("tenant");
        if !pattern.param_names().any(|p| p == rule.param) {
            return Err(self.err(
                key.key("param"),
                format!(
                    "\"{}\" is not a {{param}} of the path \"{}\"",
                    rule.param, r.path
                ),
            ));
        }
        if !auth.accepts_jwt() {
            return Err(self.err(
                key,
                "tenant scoping needs a verified JWT claim; the route's auth must include \"jwt\"",
            ));
        }
        Ok(Some(rule))
    }

    fn strip_prefix(&self, prefix: Option<&Text>, key: &KeyPath) -> Result<Option<String>> {
        let Some(p) = prefix else { return Ok(None) };
        let text = p.as_str();
        if !text.starts_with('/') || text.len() < 2 || text.ends_with('/') {
            return Err(self.err(
                key.key("strip_prefix"),
                format!("\"{text}\" must start with \"/\" and not end with \"/\", e.g. \"/api\""),
            ));
        }
        // Compared as routes compare segments (`route::pattern`): in
        // canonical form, escapes of characters a path holds raw decoded.
        let canonical = sanitize::canonicalize(text)
            .map_err(|why| self.err(key.key("strip_prefix"), format!("\"{text}\": {why}")))?;
        let prefix = crate::route::pattern::match_form(&canonical);
        // `%2A` is a `*` there too.
        if prefix.contains('*') {
            return Err(self.err(
                key.key("strip_prefix"),
                format!(
                    "\"{text}\": a prefix is literal segments; `*` and `**` are pattern syntax"
                ),
            ));
        }
        Ok(Some(prefix))
    }
}

/// Every `forward_claims` target, `[auth.jwt]`'s and each route's.
pub(super) fn claim_targets(file: &FileConfig) -> impl Iterator<Item = &Text> {
    let routes = file
        .routes
        .iter()
        .flat_map(|route| route.forward_claims.iter().flat_map(|m| m.values()));
    file.auth
        .jwt
        .iter()
        .flat_map(|jwt| jwt.forward_claims.values())
        .chain(routes)
}

/// Every `forward_claims` target, every shared-secret header, the
/// method-override headers and `upstream.deadline_header`.
pub(super) fn stripped_headers(file: &FileConfig) -> StrippedHeaders {
    let mut set = StrippedHeaders::default();
    for name in crate::policy::head::METHOD_OVERRIDES {
        set.add(name);
    }
    for header in claim_targets(file) {
        set.add(header.as_str());
    }
    for secret in file.auth.secrets.values() {
        set.add(secret.header.as_str());
    }
    // Only palisade tells the upstream how long it may take.
    if !file.upstream.deadline_header.as_str().is_empty() {
        set.add(file.upstream.deadline_header.as_str());
    }
    set
}

/// The headers whose `_` spellings go: the request ID, every webhook
/// signature, timestamp and id header, every `header:NAME` rate-limit key.
pub(super) fn strip_twins(
    set: &mut StrippedHeaders,
    request_id: &RequestIdPolicy,
    auth: &AuthPolicy,
    routes: &RouteTable,
) {
    set.add_twins_of(&request_id.header);
    for verifier in &auth.hmac {
        for name in verifier.header_names() {
            set.add_twins_of(name);
        }
    }
    for name in routes.limit_key_headers() {
        set.add_twins_of(name);
    }
}
