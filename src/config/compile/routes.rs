//! `[[routes]]` and `[defaults]` compiled into the route table, and the
//! headers every request is stripped of.

use super::*;

impl Compiler<'_> {
    pub(super) fn rate_limits(
        &self,
        rules: &[Spanned<RateLimitRuleFile>],
        key: &str,
        tenant_claim: Option<&str>,
    ) -> Result<Vec<RateLimitRule>> {
        let mut out = Vec::new();
        for (i, rule) in rules.iter().enumerate() {
            let r = rule.get_ref();
            let key = format!("{key}[{i}]");
            let by = LimitKey::parse(r.by.as_str(), tenant_claim)
                .map_err(|m| self.err(rule.span(), format!("{key}.by"), m))?;
            if r.limit == 0 {
                return Err(self.err(rule.span(), format!("{key}.limit"), "must be at least 1"));
            }
            if r.per.0.is_zero() {
                return Err(self.err(rule.span(), format!("{key}.per"), "must be longer than 0s"));
            }
            let burst = r.burst.unwrap_or(r.limit);
            if burst == 0 {
                return Err(self.err(rule.span(), format!("{key}.burst"), "must be at least 1"));
            }
            out.push(RateLimitRule {
                by,
                by_label: r.by.as_str().into(),
                limit: r.limit,
                per: r.per.0,
                burst,
                shadow: r.shadow,
            });
        }
        Ok(out)
    }

    pub(super) fn routes(
        &self,
        file: &FileConfig,
        base_headers: &SecurityHeaders,
    ) -> Result<RouteTable> {
        let defaults = &file.defaults;
        let default_auth = AuthRequirement::parse(&defaults.auth.get_ref().0)
            .map_err(|m| self.err(defaults.auth.span(), "defaults.auth", m))?;
        let global_claims = match &file.auth.jwt {
            Some(jwt) => self.forward_claims(&jwt.forward_claims, "auth.jwt.forward_claims")?,
            None => Vec::new(),
        };
        if file.routes.is_empty() {
            return Err(self.err(0..0, "routes", "no [[routes]]: every request would be 404; add at least one (path = \"/**\" passes everything)"));
        }
        let mut names = HashSet::new();
        let mut routes = Vec::new();
        for (i, spanned) in file.routes.iter().enumerate() {
            let route = self.route(
                i,
                spanned,
                file,
                &default_auth,
                &global_claims,
                base_headers,
            )?;
            if !names.insert(route.name.clone()) {
                return Err(self.err(
                    spanned.get_ref().name.span(),
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
                r.get_ref().path.span(),
                format!("routes[{later}]"),
                format!(
                    "route \"{}\" ({}) can never match: the earlier route \"{}\" ({}) takes every request it would; move it above, or narrow the earlier route's path or methods",
                    r.get_ref().name.get_ref(), r.get_ref().path.get_ref(), e.get_ref().name.get_ref(), e.get_ref().path.get_ref()
                ),
            )
        })
    }

    pub(super) fn route(
        &self,
        i: usize,
        spanned: &Spanned<RouteFile>,
        file: &FileConfig,
        default_auth: &AuthRequirement,
        global_claims: &[(String, HeaderName)],
        base_headers: &SecurityHeaders,
    ) -> Result<Route> {
        let r = spanned.get_ref();
        let key = format!("routes[{i}]");
        let name = r.name.get_ref().as_str();
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c))
        {
            return Err(self.err(
                r.name.span(),
                format!("{key}.name"),
                format!("\"{name}\" is not a route name; use letters, digits, - _ . :"),
            ));
        }
        let path_text = r.path.get_ref().as_str();
        let canonical = sanitize::canonicalize_pattern(path_text).map_err(|why| {
            self.err(
                r.path.span(),
                format!("{key}.path"),
                format!("\"{path_text}\": {why}"),
            )
        })?;
        let pattern = Pattern::parse(&canonical)
            .map_err(|m| self.err(r.path.span(), format!("{key}.path"), m))?;
        let methods = match &r.methods {
            None => None,
            Some(list) => {
                let mut methods = Vec::new();
                for m in list.get_ref() {
                    let upper = m.as_str().to_ascii_uppercase();
                    let method = Method::from_bytes(upper.as_bytes()).map_err(|_| {
                        self.err(
                            list.span(),
                            format!("{key}.methods"),
                            format!("\"{m}\" is not an HTTP method"),
                        )
                    })?;
                    methods.push(method);
                }
                if methods.is_empty() {
                    return Err(self.err(
                        list.span(),
                        format!("{key}.methods"),
                        "is empty; leave it out to accept every method",
                    ));
                }
                Some(methods)
            }
        };
        let auth = match &r.auth {
            Some(a) => AuthRequirement::parse(&a.get_ref().0)
                .map_err(|m| self.err(a.span(), format!("{key}.auth"), m))?,
            None => default_auth.clone(),
        };
        let auth_span = r
            .auth
            .as_ref()
            .map(|a| a.span())
            .unwrap_or_else(|| spanned.span());
        if auth.accepts_jwt() && file.auth.jwt.is_none() {
            return Err(self.err(auth_span, format!("{key}.auth"), format!(
                "route \"{name}\" requires a JWT (auth = \"{auth}\"{}) but [auth.jwt] is not configured; add [auth.jwt], or set auth = \"none\" explicitly to run without auth",
                if r.auth.is_none() { ", inherited from [defaults]" } else { "" }
            )));
        }
        for secret in auth.secret_names() {
            if !file.auth.secrets.contains_key(secret) {
                return Err(self.err(
                    auth_span.clone(),
                    format!("{key}.auth"),
                    format!("secret \"{secret}\" is not defined; add [auth.secrets.{secret}]"),
                ));
            }
        }
        let tenant = match &r.tenant {
            None => None,
            Some(t) => {
                let rule = TenantRule {
                    param: t.get_ref().param.as_str().to_string(),
                    claim: t.get_ref().claim.as_str().to_string(),
                };
                if !pattern.param_names().any(|p| p == rule.param) {
                    return Err(self.err(
                        t.span(),
                        format!("{key}.tenant.param"),
                        format!(
                            "\"{}\" is not a {{param}} of the path \"{path_text}\"",
                            rule.param
                        ),
                    ));
                }
                if !auth.accepts_jwt() {
                    return Err(self.err(t.span(), format!("{key}.tenant"), "tenant scoping needs a verified JWT claim; the route's auth must include \"jwt\""));
                }
                Some(rule)
            }
        };
        let tenant_claim = tenant.as_ref().map(|t| t.claim.as_str());
        let rate_limits = match &r.rate_limits {
            Some(rules) => self.rate_limits(rules, &format!("{key}.rate_limits"), tenant_claim)?,
            None => self.rate_limits(
                &file.defaults.rate_limits,
                "defaults.rate_limits",
                tenant_claim,
            )?,
        };
        let security_headers = match &r.security_headers {
            None => Arc::new(base_headers.clone()),
            Some(overrides) => Arc::new(self.security_headers(
                &merge_headers(&file.security_headers, overrides),
                &format!("{key}.security_headers"),
            )?),
        };
        let forward_claims = match &r.forward_claims {
            Some(claims) => self.forward_claims(claims, &format!("{key}.forward_claims"))?,
            None => global_claims.to_vec(),
        };
        let strip_prefix = match &r.strip_prefix {
            None => None,
            Some(p) => {
                let text = p.get_ref().as_str();
                if !text.starts_with('/') || text.len() < 2 || text.ends_with('/') {
                    return Err(self.err(
                        p.span(),
                        format!("{key}.strip_prefix"),
                        format!(
                            "\"{text}\" must start with \"/\" and not end with \"/\", e.g. \"/api\""
                        ),
                    ));
                }
                Some(text.to_string())
            }
        };
        Ok(Route {
            id: i,
            name: name.into(),
            pattern,
            methods,
            auth,
            tenant,
            timeout: r.timeout.unwrap_or(file.defaults.timeout).0,
            max_body: r.max_body.unwrap_or(file.defaults.max_body).0,
            rate_limits,
            cors: r.cors.unwrap_or(true),
            security_headers,
            retry: r.retry.unwrap_or(true),
            forward_claims,
            strip_prefix,
        })
    }
}

pub(super) fn merge_headers(
    base: &SecurityHeadersFile,
    o: &SecurityHeadersOverride,
) -> SecurityHeadersFile {
    let pick = |over: &Option<Text>, base: &Text| over.clone().unwrap_or_else(|| base.clone());
    SecurityHeadersFile {
        x_content_type_options: pick(&o.x_content_type_options, &base.x_content_type_options),
        x_frame_options: pick(&o.x_frame_options, &base.x_frame_options),
        x_xss_protection: pick(&o.x_xss_protection, &base.x_xss_protection),
        referrer_policy: pick(&o.referrer_policy, &base.referrer_policy),
        content_security_policy: pick(&o.content_security_policy, &base.content_security_policy),
        strict_transport_security: pick(
            &o.strict_transport_security,
            &base.strict_transport_security,
        ),
        permissions_policy: pick(&o.permissions_policy, &base.permissions_policy),
        cross_origin_opener_policy: pick(
            &o.cross_origin_opener_policy,
            &base.cross_origin_opener_policy,
        ),
        remove_response_headers: o
            .remove_response_headers
            .clone()
            .unwrap_or_else(|| base.remove_response_headers.clone()),
    }
}

/// Method overrides Rails, Express and Laravel honour: the method palisade
/// routed on must be the one the upstream runs.
const METHOD_OVERRIDES: [&str; 3] = [
    "X-HTTP-Method-Override",
    "X-HTTP-Method",
    "X-Method-Override",
];

/// Every `forward_claims` target, every shared-secret header and the
/// method-override headers.
pub(super) fn stripped_headers(file: &FileConfig) -> StrippedHeaders {
    let mut set = StrippedHeaders::default();
    for name in METHOD_OVERRIDES {
        set.add(name);
    }
    if let Some(jwt) = &file.auth.jwt {
        for header in jwt.forward_claims.values() {
            set.add(header.get_ref().as_str());
        }
    }
    for route in &file.routes {
        for header in route
            .get_ref()
            .forward_claims
            .iter()
            .flat_map(|m| m.values())
        {
            set.add(header.get_ref().as_str());
        }
    }
    for secret in file.auth.secrets.values() {
        set.add(secret.get_ref().header.as_str());
    }
    set
}
