//! What changed between two route tables (SPEC §6.5): routes added,
//! removed, reordered and changed (methods, pattern, auth, tenant, limits,
//! timeout, `max_body`), one line each. `palisade check --against OLD.toml`
//! prints it; every successful reload logs it (field `changes`).

use super::table::{Route, RouteTable};
use crate::config::units::{format_duration, format_size};

/// One route's settings as `check` shows them, by column name.
pub fn summary(route: &Route) -> [(&'static str, String); 7] {
    let methods = route.methods.as_ref().map_or_else(
        || "*".to_string(),
        |ms| ms.iter().map(|m| m.as_str()).collect::<Vec<_>>().join(","),
    );
    let tenant = route.tenant.as_ref().map_or_else(
        || "-".to_string(),
        |t| format!("{{{}}}={}", t.param, t.claim),
    );
    [
        ("methods", methods),
        ("pattern", route.pattern.to_string()),
        ("auth", route.auth.to_string()),
        ("tenant", tenant),
        ("limits", limits(route)),
        ("timeout", format_duration(route.timeout)),
        ("max_body", format_size(route.max_body)),
    ]
}

/// The route's rate limits, `by:limit/per[ burst N][ (shadow)]`, or `-`.
pub fn limits(route: &Route) -> String {
    if route.rate_limits.is_empty() {
        return "-".into();
    }
    route
        .rate_limits
        .iter()
        .map(|l| {
            let mut text = format!("{}:{}/{}", l.by_label, l.limit, format_duration(l.per));
            if l.burst != l.limit {
                text.push_str(&format!(" burst {}", l.burst));
            }
            if let Some(claim) = &l.tier_claim {
                let names: Vec<&str> = l.tiers.iter().map(|t| &*t.name).collect();
                text.push_str(&format!(" tiers by {claim}: {}", names.join("/")));
            }
            if l.shadow {
                text.push_str(" (shadow)");
            }
            text
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The changes from `old` to `new`, one line each; empty when the route
/// tables are the same.
pub fn changes(old: &RouteTable, new: &RouteTable) -> Vec<String> {
    let (old, new) = (old.routes(), new.routes());
    let find =
        |routes: &[std::sync::Arc<Route>], name: &str| routes.iter().position(|r| &*r.name == name);
    let mut out = Vec::new();
    for (i, route) in old.iter().enumerate() {
        if find(new, &route.name).is_none() {
            out.push(format!("removed route \"{}\" (was #{})", route.name, i + 1));
        }
    }
    // Order among the routes both tables have: an insertion elsewhere is
    // not a reorder.
    let common_old: Vec<&str> = old
        .iter()
        .map(|r| &*r.name)
        .filter(|n| find(new, n).is_some())
        .collect();
    let common_new: Vec<&str> = new
        .iter()
        .map(|r| &*r.name)
        .filter(|n| find(old, n).is_some())
        .collect();
    for (i, route) in new.iter().enumerate() {
        let Some(was) = find(old, &route.name) else {
            let fields = summary(route).map(|(k, v)| format!("{k} {v}")).join(", ");
            out.push(format!(
                "added route \"{}\" at #{}: {fields}",
                route.name,
                i + 1
            ));
            continue;
        };
        let moved = common_old.iter().position(|n| *n == &*route.name)
            != common_new.iter().position(|n| *n == &*route.name);
        if moved {
            out.push(format!(
                "reordered route \"{}\": #{} -> #{}",
                route.name,
                was + 1,
                i + 1
            ));
        }
        let diffs: Vec<String> = summary(&old[was])
            .into_iter()
            .zip(summary(route))
            .filter(|((_, a), (_, b))| a != b)
            .map(|((key, a), (_, b))| format!("{key} {a} -> {b}"))
            .collect();
        if !diffs.is_empty() {
            out.push(format!(
                "changed route \"{}\": {}",
                route.name,
                diffs.join("; ")
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Env, load_str};

    fn table(routes: &str) -> RouteTable {
        let text = format!(
            "[upstream]\nurl = \"http://127.0.0.1:1\"\n[defaults]\nauth = \"none\"\n{routes}"
        );
        load_str(&text, "t.toml", &Env::default()).unwrap().routes
    }

    #[test]
    fn lists_added_removed_reordered_and_changed_routes() {
        let old = table(
            "[[routes]]\nname = \"a\"\npath = \"/a\"\n\
             [[routes]]\nname = \"b\"\npath = \"/b\"\ntimeout = \"5s\"\n\
             [[routes]]\nname = \"c\"\npath = \"/c\"\n",
        );
        let new = table(
            "[[routes]]\nname = \"b\"\npath = \"/b\"\nmethods = [\"GET\"]\n\
             rate_limits = [{ by = \"ip\", limit = 5, per = \"1m\" }]\n\
             [[routes]]\nname = \"a\"\npath = \"/a\"\n\
             [[routes]]\nname = \"d\"\npath = \"/d\"\n",
        );
        let lines = changes(&old, &new);
        assert_eq!(lines[0], "removed route \"c\" (was #3)");
        assert_eq!(lines[1], "reordered route \"b\": #2 -> #1");
        assert_eq!(
            lines[2],
            "changed route \"b\": methods * -> GET; limits - -> ip:5/1m; timeout 5s -> 30s"
        );
        assert_eq!(lines[3], "reordered route \"a\": #1 -> #2");
        assert!(lines[4].starts_with("added route \"d\" at #3: methods *, pattern /d"));
        assert_eq!(lines.len(), 5);
        assert!(changes(&new, &new).is_empty());
    }

    #[test]
    fn an_insertion_is_not_a_reorder() {
        let old = table("[[routes]]\nname = \"a\"\npath = \"/a\"\n");
        let new = table(
            "[[routes]]\nname = \"z\"\npath = \"/z\"\n[[routes]]\nname = \"a\"\npath = \"/a\"\n",
        );
        assert_eq!(changes(&old, &new).len(), 1);
    }
}
