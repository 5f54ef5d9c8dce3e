//! The compiled route table: matched against the canonical path in file
//! order, first match wins; a route whose `methods` exclude the request's
//! method does not match, so a later route may take it; 405 only when some
//! pattern matched but no route accepted the method.

use std::sync::Arc;
use std::time::Duration;

use http::Method;

use super::pattern::{Params, Pattern, Segment, literal_eq};
use crate::observe::metrics::RouteSeries;
use crate::policy::auth::AuthRequirement;
use crate::policy::headers::SecurityHeaders;
use crate::policy::ip_list::IpRule;
use crate::policy::ratelimit::{LimitKey, RateLimitRule};
use crate::policy::require_claims::ClaimEntry;
use crate::policy::tenant::TenantRule;

/// One compiled route: everything the request path needs, resolved from the
/// route's own keys and `[defaults]` at load time.
#[derive(Debug)]
pub struct Route {
    /// Position in the table (indexes per-route runtime state).
    pub id: usize,
    /// Unique name; the `route` label of every metric.
    pub name: Arc<str>,
    /// What paths it takes.
    pub pattern: Pattern,
    /// `None` = every method.
    pub methods: Option<Vec<Method>>,
    /// Who may call it.
    pub auth: AuthRequirement,
    /// Path parameter that must equal a verified claim.
    pub tenant: Option<TenantRule>,
    /// Total deadline for the upstream's response headers, retries included.
    pub timeout: Duration,
    /// Largest request body accepted, in bytes.
    pub max_body: u64,
    /// Every one must admit the request.
    pub rate_limits: Vec<RateLimitRule>,
    /// Whether `[cors]` applies to this route.
    pub cors: bool,
    /// The route's security headers (defaults merged with its overrides).
    pub security_headers: Arc<SecurityHeaders>,
    /// Whether `[upstream.retry]` applies.
    pub retry: bool,
    /// Verified claim (dotted path) → header sent upstream.
    pub forward_claims: crate::policy::auth::claims::ForwardClaims,
    /// Removed from the front of the canonical path before forwarding.
    pub strip_prefix: Option<String>,
    /// `allow_ips` / `deny_ips` (SPEC §6.7).
    pub ips: Arc<IpRule>,
    /// `require_claims` (SPEC §6.6): every entry must match a JWT's claims.
    pub require_claims: Vec<ClaimEntry>,
    /// The route's metric series, looked up on its first request.
    pub series: std::sync::OnceLock<Arc<RouteSeries>>,
}

impl Route {
    /// Whether this route takes `method`.
    pub fn accepts(&self, method: &Method) -> bool {
        self.methods
            .as_ref()
            .is_none_or(|methods| methods.contains(method))
    }

    /// Whether the route lets anyone through and asks nothing of them:
    /// `auth = "none"`, no IP list, no claims, no tenant, no enforced
    /// rate limit. A spelling that reaches its handler under another
    /// route's policy gains nothing it could not have asked for directly.
    pub fn admits_anyone(&self) -> bool {
        self.auth.anonymous
            && self.auth.methods.is_empty()
            && self.ips.allow.is_none()
            && self.ips.deny.is_none()
            && self.require_claims.is_empty()
            && self.tenant.is_none()
            && self.rate_limits.iter().all(|rule| rule.shadow)
    }

    /// Whether this route handles a request no more loosely than `other`
    /// would, in everything but who may call: no `strip_prefix` on either
    /// (a stripping route hides the unstripped path's handler), a
    /// `max_body` and `timeout` no larger (a short timeout is a
    /// slow-body defence), no retry where `other` has none (a retried
    /// handler runs twice), no CORS where `other` has none, and the same
    /// security headers (`X-Frame-Options` on a login page).
    pub fn handles_no_looser(&self, other: &Route) -> bool {
        self.strip_prefix.is_none()
            && other.strip_prefix.is_none()
            && self.max_body <= other.max_body
            && self.timeout <= other.timeout
            && (other.retry || !self.retry)
            && (other.cors || !self.cors)
            && self.security_headers.same_as(&other.security_headers)
    }

    /// Whether a `HEAD` request stops at this route (405) rather than
    /// fall through to a later one: the route takes `GET` and not `HEAD`.
    /// Backends answer `HEAD` with their `GET` handler (RFC 9110 §9.3.2:
    /// Starlette, Flask, Rails, Spring, Express do), so a later, looser
    /// route would run the protected handler without its credentials.
    fn stops_head(&self, method: &Method) -> bool {
        method == Method::HEAD
            && self
                .methods
                .as_ref()
                .is_some_and(|methods| methods.contains(&Method::GET))
    }

    /// Whether an earlier route `self` leaves nothing for `later` to take
    /// (a `HEAD` stops at a route taking `GET`, see `stops_head`).
    pub fn shadows(&self, later: &Route) -> bool {
        let methods_covered = match (&self.methods, &later.methods) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(mine), Some(theirs)) => theirs
                .iter()
                .all(|m| mine.contains(m) || (m == Method::HEAD && mine.contains(&Method::GET))),
        };
        methods_covered && self.pattern.covers(&later.pattern)
    }
}

/// What the table says about a request.
#[derive(Debug)]
pub enum Lookup {
    /// This route takes it, with these captures.
    Found(Arc<Route>, Params),
    /// Some patterns matched but none took the method; the `Allow` value.
    MethodNotAllowed(String),
    /// No pattern matched.
    NotFound,
}

/// Routes in file order.
#[derive(Debug, Default)]
pub struct RouteTable {
    routes: Vec<Arc<Route>>,
    known_methods: Vec<Method>,
    longest_literal: usize,
    /// Every literal segment, in match form and lower case.
    literals: std::collections::HashSet<Box<str>>,
}

/// The methods RFC 9110 §9 and RFC 5789 define.
const STANDARD_METHODS: [Method; 9] = [
    Method::GET,
    Method::HEAD,
    Method::POST,
    Method::PUT,
    Method::DELETE,
    Method::CONNECT,
    Method::OPTIONS,
    Method::TRACE,
    Method::PATCH,
];

impl RouteTable {
    /// Builds the table, refusing a route that an earlier one shadows. The
    /// error is (index of the shadowed route, index of the earlier one).
    pub fn new(routes: Vec<Route>) -> Result<Self, (usize, usize)> {
        for (later_idx, later) in routes.iter().enumerate() {
            if let Some(earlier_idx) = routes[..later_idx]
                .iter()
                .position(|earlier| earlier.shadows(later))
            {
                return Err((later_idx, earlier_idx));
            }
        }
        let mut known_methods = STANDARD_METHODS.to_vec();
        for method in routes.iter().flat_map(|r| r.methods.iter().flatten()) {
            if !known_methods.contains(method) {
                known_methods.push(method.clone());
            }
        }
        let literals: std::collections::HashSet<Box<str>> = routes
            .iter()
            .flat_map(|r| r.pattern.segments())
            .filter_map(|s| match s {
                Segment::Literal(l) => Some(l.to_ascii_lowercase().into_boxed_str()),
                _ => None,
            })
            .collect();
        let longest_literal = literals
            .iter()
            .map(|l| l.len().saturating_mul(3))
            .max()
            .unwrap_or(0);
        Ok(Self {
            known_methods,
            longest_literal,
            literals,
            routes: routes
                .into_iter()
                .enumerate()
                .map(|(id, mut route)| {
                    route.id = id;
                    Arc::new(route)
                })
                .collect(),
        })
    }

    /// The standard methods and every method a route names: a request
    /// method equal to one of them only when case is ignored is refused.
    pub fn known_methods(&self) -> &[Method] {
        &self.known_methods
    }

    /// Whether `a` and `b` reach the same route for `method` (or both no
    /// route): a lookalike spelling must not reach another route than the
    /// one it looks like.
    pub fn same_route(&self, method: &Method, a: &str, b: &str) -> bool {
        route_id(&self.lookup(method, a)) == route_id(&self.lookup(method, b))
    }

    /// The longest path segment that can equal a literal segment of any
    /// pattern, in bytes (three per character: an escape matches the
    /// character, see `route::pattern`): a longer path segment can only
    /// match a wildcard.
    pub fn longest_literal(&self) -> usize {
        self.longest_literal
    }

    /// Whether a path segment (canonical) equals some pattern's literal
    /// segment. Where neither a path's last segment nor a stem of it is a
    /// literal, the two reach the same route: they differ only there, and
    /// only a literal tells them apart.
    pub fn is_literal(&self, segment: &str) -> bool {
        if segment.len() > self.longest_literal {
            return false;
        }
        let mut key = super::pattern::match_form(segment);
        key.make_ascii_lowercase();
        self.literals.contains(key.as_str())
    }

    /// Whether `path` (whose lookup for `method` is `reached`) must be
    /// refused because a backend that cuts its last segment's suffix
    /// (Rails' `(.:format)`, Spring MVC's suffix match) would serve `stem`
    /// for it: the stem reaches another route, the path's route does not
    /// declare the suffixed spelling ([`declares_suffix`]), and the stem's
    /// route asks something of its callers the path's route would not
    /// ([`gains_nothing`]). One lookup, the stem's.
    pub fn suffix_reaches_elsewhere(
        &self,
        method: &Method,
        path: &str,
        reached: &Lookup,
        stem: &str,
    ) -> bool {
        let stem_reached = self.lookup(method, stem);
        if route_id(reached) == route_id(&stem_reached) {
            return false;
        }
        let Lookup::Found(route, _) = reached else {
            return true;
        };
        !(declares_suffix(route, path, &stem_reached) || gains_nothing(route, &stem_reached))
    }

    /// The routes in match order.
    pub fn routes(&self) -> &[Arc<Route>] {
        &self.routes
    }

    /// Every request header a route's limit is keyed by
    /// (`by = "header:NAME"`), once per such limit.
    pub fn limit_key_headers(&self) -> impl Iterator<Item = &http::HeaderName> {
        self.routes
            .iter()
            .flat_map(|route| &route.rate_limits)
            .filter_map(|rule| match &rule.by {
                LimitKey::Header(name) => Some(name),
                _ => None,
            })
    }

    /// Whether some route's limit is keyed by the request header `name`:
    /// a header palisade relies on, which a client's `Connection` must not
    /// remove. Looked up only for a name a `Connection` line gives (rare):
    /// no list is kept for it.
    pub fn keys_a_limit(&self, name: &http::HeaderName) -> bool {
        self.limit_key_headers().any(|key| key == name)
    }

    /// The smallest `max_body` of any route: a declared body no larger
    /// is within every route's limit, so reading it before the route is
    /// known never reads one that must be refused unread (SPEC §3: 413 at
    /// once). 0 when there are no routes.
    pub fn smallest_max_body(&self) -> u64 {
        self.routes.iter().map(|r| r.max_body).min().unwrap_or(0)
    }

    /// First route whose pattern matches `path` and whose methods take `method`.
    pub fn lookup(&self, method: &Method, path: &str) -> Lookup {
        let mut pattern_matched = false;
        let mut params = Vec::new();
        for route in &self.routes {
            if !route.pattern.matches(path, &mut params) {
                continue;
            }
            if route.accepts(method) {
                return Lookup::Found(route.clone(), params);
            }
            params.clear();
            pattern_matched = true;
            if route.stops_head(method) {
                break;
            }
        }
        if !pattern_matched {
            return Lookup::NotFound;
        }
        Lookup::MethodNotAllowed(self.allow_header(path))
    }

    fn allow_header(&self, path: &str) -> String {
        let mut allowed: Vec<&str> = Vec::new();
        let mut scratch = Vec::new();
        for route in &self.routes {
            if !route.pattern.matches(path, &mut scratch) {
                continue;
            }
            scratch.clear();
            for method in route.methods.iter().flatten() {
                if !allowed.contains(&method.as_str()) {
                    allowed.push(method.as_str());
                }
            }
        }
        allowed.join(", ")
    }
}

/// The route a lookup found, if any.
fn route_id(reached: &Lookup) -> Option<usize> {
    match reached {
        Lookup::Found(route, _) => Some(route.id),
        Lookup::MethodNotAllowed(_) | Lookup::NotFound => None,
    }
}

/// Whether the stem reaching another route than `path` (taken by
/// `route`) costs nothing: the stem's route admits anyone
/// (`Route::admits_anyone`) and `route` handles the request no more
/// loosely than it would (`Route::handles_no_looser`), so a backend
/// serving the stem's handler for `path` (under `path`'s policy) gives
/// nothing away (`/login.css` beside a public `/login` and a JWT
/// catch-all).
fn gains_nothing(route: &Route, stem_reached: &Lookup) -> bool {
    matches!(stem_reached, Lookup::Found(stem_route, _)
        if stem_route.admits_anyone() && route.handles_no_looser(stem_route))
}

/// Whether `path`'s suffixed last segment is a spelling the operator
/// declared, so the stem reaching another route is no lookalike: `route`
/// (the one `path` reaches) names that segment literally (`/api/admin.rss`
/// beside `/api/admin`). A pattern with wildcards before it
/// (`/{lang}/manifest.json`) declares no more than it names: it does not
/// take the spelling of a route that names a segment it leaves to a
/// wildcard, or names the stem (`/admin/manifest`, `/admin/{page}`,
/// `/admin/**`).
fn declares_suffix(route: &Route, path: &str, stem_reached: &Lookup) -> bool {
    let (index, last) = crate::policy::sanitize::last_segment(path);
    let segments = route.pattern.segments();
    if !matches!(segments.get(index), Some(Segment::Literal(l)) if literal_eq(last, l)) {
        return false;
    }
    let is_literal = |s: Option<&Segment>| matches!(s, Some(Segment::Literal(_)));
    if segments[..index].iter().all(|s| is_literal(Some(s))) {
        return true;
    }
    match stem_reached {
        Lookup::Found(stem_route, _) => {
            let theirs = stem_route.pattern.segments();
            !is_literal(theirs.get(index))
                && (0..index).all(|i| is_literal(segments.get(i)) || !is_literal(theirs.get(i)))
        }
        Lookup::MethodNotAllowed(_) => false,
        Lookup::NotFound => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::auth::AuthRequirement;

    fn route(name: &str, path: &str, methods: Option<&[&str]>) -> Route {
        Route {
            id: 0,
            name: name.into(),
            pattern: Pattern::parse(path).unwrap(),
            methods: methods.map(|ms| ms.iter().map(|m| m.parse().unwrap()).collect()),
            auth: AuthRequirement::none(),
            tenant: None,
            timeout: Duration::from_secs(1),
            max_body: 1024,
            rate_limits: Vec::new(),
            cors: true,
            security_headers: Arc::new(SecurityHeaders::default()),
            retry: true,
            forward_claims: Vec::new().into(),
            strip_prefix: None,
            ips: Arc::default(),
            require_claims: Vec::new(),
            series: Default::default(),
        }
    }

    fn found(table: &RouteTable, method: Method, path: &str) -> Option<String> {
        match table.lookup(&method, path) {
            Lookup::Found(r, _) => Some(r.name.to_string()),
            _ => None,
        }
    }

    #[test]
    fn first_match_wins_and_methods_fall_through() {
        let table = RouteTable::new(vec![
            route("read", "/items/**", Some(&["GET"])),
            route("write", "/items/**", Some(&["POST"])),
            route("rest", "/**", None),
        ])
        .unwrap();
        assert_eq!(
            found(&table, Method::GET, "/items/1").as_deref(),
            Some("read")
        );
        assert_eq!(
            found(&table, Method::POST, "/items/1").as_deref(),
            Some("write")
        );
        assert_eq!(
            found(&table, Method::DELETE, "/items/1").as_deref(),
            Some("rest")
        );
        assert_eq!(
            found(&table, Method::GET, "/other").as_deref(),
            Some("rest")
        );
    }

    /// [`gains_nothing`] for a GET of `path`, `false` where it reaches no route.
    fn stem_gains_nothing(table: &RouteTable, path: &str, stem: &str) -> bool {
        let Lookup::Found(route, _) = table.lookup(&Method::GET, path) else {
            return false;
        };
        gains_nothing(&route, &table.lookup(&Method::GET, stem))
    }

    /// [`declares_suffix`] for a GET of `path`, `false` where it reaches no route.
    fn declares_for_get(table: &RouteTable, path: &str, stem: &str) -> bool {
        let Lookup::Found(route, _) = table.lookup(&Method::GET, path) else {
            return false;
        };
        declares_suffix(&route, path, &table.lookup(&Method::GET, stem))
    }

    #[test]
    fn a_stem_reaching_an_open_route_gains_nothing() {
        let mut login = route("login", "/login", None);
        login.max_body = 4096;
        let mut limited = route("limited", "/signup", None);
        limited.auth = AuthRequirement {
            anonymous: true,
            methods: vec![crate::policy::auth::AuthMethod::Jwt],
        };
        let table = RouteTable::new(vec![
            login,
            limited,
            route("admin", "/admin", None),
            route("rest", "/**", None),
        ])
        .unwrap();
        let gains_nothing = |path, stem| stem_gains_nothing(&table, path, stem);
        // Open, and its body limit larger than the catch-all's (1024).
        assert!(gains_nothing("/login.css", "/login"));
        // `optional` still reads credentials: not open to anyone.
        assert!(!gains_nothing("/signup.js", "/signup"));
        // Anything the stem's route does more strictly keeps the refusal.
        let stricter: [fn(&mut Route); 5] = [
            |r| r.max_body = 10,
            |r| r.timeout = Duration::from_millis(10),
            |r| r.retry = false,
            |r| r.cors = false,
            |r| r.strip_prefix = Some("/small".into()),
        ];
        for (n, make_stricter) in stricter.into_iter().enumerate() {
            let mut small = route("small", "/small", None);
            make_stricter(&mut small);
            let table = RouteTable::new(vec![small, route("rest", "/**", None)]).unwrap();
            assert!(!stem_gains_nothing(&table, "/small.json", "/small"), "{n}");
        }
    }

    #[test]
    fn head_stops_at_a_route_taking_get() {
        let table = RouteTable::new(vec![
            route("reports", "/reports", Some(&["GET"])),
            route("hook", "/hook", Some(&["POST"])),
            route("rest", "/**", None),
        ])
        .unwrap();
        match table.lookup(&Method::HEAD, "/reports") {
            Lookup::MethodNotAllowed(allow) => assert_eq!(allow, "GET"),
            other => panic!("expected 405, got {other:?}"),
        }
        // Other methods still fall through, and so does HEAD past a route
        // that does not take GET.
        assert_eq!(
            found(&table, Method::POST, "/reports").as_deref(),
            Some("rest")
        );
        assert_eq!(
            found(&table, Method::HEAD, "/hook").as_deref(),
            Some("rest")
        );
        // A later HEAD-only route behind a GET route is unreachable.
        let err = RouteTable::new(vec![
            route("get", "/a", Some(&["GET"])),
            route("head", "/a", Some(&["HEAD"])),
        ])
        .unwrap_err();
        assert_eq!(err, (1, 0));
    }

    #[test]
    fn not_found_and_method_not_allowed() {
        let table = RouteTable::new(vec![
            route("health", "/health", Some(&["GET", "HEAD"])),
            route("hook", "/health", Some(&["POST"])),
        ])
        .unwrap();
        assert!(matches!(
            table.lookup(&Method::GET, "/nope"),
            Lookup::NotFound
        ));
        match table.lookup(&Method::DELETE, "/health") {
            Lookup::MethodNotAllowed(allow) => assert_eq!(allow, "GET, HEAD, POST"),
            other => panic!("expected 405, got {other:?}"),
        }
    }

    #[test]
    fn shadowed_routes_are_refused() {
        let err = RouteTable::new(vec![
            route("all", "/**", None),
            route("api", "/api/**", None),
        ])
        .unwrap_err();
        assert_eq!(err, (1, 0));
        let err = RouteTable::new(vec![
            route("get", "/a/*", Some(&["GET", "POST"])),
            route("get2", "/a/{id}", Some(&["GET"])),
        ])
        .unwrap_err();
        assert_eq!(err, (1, 0));
        // Methods not covered: the later route still takes something.
        assert!(
            RouteTable::new(vec![
                route("get", "/a/**", Some(&["GET"])),
                route("any", "/a/**", None),
            ])
            .is_ok()
        );
        // Pattern not covered.
        assert!(
            RouteTable::new(vec![route("x", "/api", None), route("y", "/api/**", None)]).is_ok()
        );
    }

    #[test]
    fn a_suffix_is_declared_only_by_a_route_naming_it() {
        let table = RouteTable::new(vec![
            route("feed", "/feed.json", None),
            route("manifest", "/{lang}/manifest.json", None),
            route("admin-manifest", "/admin/manifest", None),
            route("admin", "/api/admin", None),
            route("files", "/files/{name}", None),
            route("rest", "/**", None),
        ])
        .unwrap();
        let declares = |path, stem| declares_for_get(&table, path, stem);
        assert!(declares("/FEED.json", "/FEED"));
        assert!(declares("/feed.json/", "/feed"));
        assert!(!declares("/api/admin.json", "/api/admin"));
        assert!(!declares("/files/a.pdf", "/files/a"));
        // A wildcard before the named segment: not over a route naming
        // the stem, but over the catch-all.
        assert!(!declares("/admin/manifest.json", "/admin/manifest"));
        assert!(declares("/en/manifest.json", "/en/manifest"));
        assert_eq!(table.longest_literal(), 3 * "manifest.json".len());
        assert!(table.is_literal("MANIFEST.json"));
        assert!(table.is_literal("admin"));
        assert!(!table.is_literal("manifest.js"));
        // Nor that of a route naming a segment its wildcard leaves open.
        let table = RouteTable::new(vec![
            route("manifest", "/{lang}/manifest.json", None),
            route("admin-page", "/admin/{page}", None),
            route("staff", "/staff/**", None),
            route("rest", "/**", None),
        ])
        .unwrap();
        let declares = |path, stem| declares_for_get(&table, path, stem);
        assert!(!declares("/admin/manifest.json", "/admin/manifest"));
        assert!(!declares("/staff/manifest.json", "/staff/manifest"));
        assert!(declares("/en/manifest.json", "/en/manifest"));
    }
}
