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
                // Each tier with its numbers: a tier's limit changed on its
                // own is a change to the route.
                let tiers: Vec<String> = l
                    .tiers
                    .iter()
                    .map(|t| {
                        let mut tier = format!("{} {}", t.name, t.limit);
                        if t.burst != t.limit {
                            tier.push_str(&format!(" burst {}", t.burst));
                        }
                        tier
                    })
                    .collect();
                text.push_str(&format!(" tiers by {claim}: {}", tiers.join("/")));
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
    let kept_in_order = longest_common_order(&common_old, &common_new);
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
        if !kept_in_order.contains(&&*route.name) {
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

/// The most routes whose order among themselves is the same in both
/// lists (a longest common subsequence): the others are the ones that
/// moved, so one route moved ahead is one line, not a line for every
/// route it passed. Between two routes that swapped, the one that moved
/// ahead is reported (it is the one that may now shadow the other).
fn longest_common_order<'a>(old: &[&'a str], new: &[&str]) -> Vec<&'a str> {
    let (n, m) = (old.len(), new.len());
    let mut lengths = vec![vec![0usize; m + 1]; n + 1];
    for i in 0..n {
        for j in 0..m {
            lengths[i + 1][j + 1] = if old[i] == new[j] {
                lengths[i][j] + 1
            } else {
                lengths[i][j + 1].max(lengths[i + 1][j])
            };
        }
    }
    let (mut i, mut j) = (n, m);
    let mut kept = Vec::new();
    while i > 0 && j > 0 {
        if old[i - 1] == new[j - 1] {
            kept.push(old[i - 1]);
            i -= 1;
            j -= 1;
        } else if lengths[i - 1][j] >= lengths[i][j - 1] {
            i -= 1;
        } else {
            j -= 1;
        }
    }
    kept
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
        // `a` kept its order among the others; only `b` moved (ahead of it).
        assert!(lines[3].starts_with("added route \"d\" at #3: methods *, pattern /d"));
        assert_eq!(lines.len(), 4);
        assert!(changes(&new, &new).is_empty());
    }

    /// Red team, session 29: a tier's numbers changed on their own were
    /// "none to the routes" (only the tiers' names were compared).
    #[test]
    fn a_tiers_numbers_are_part_of_the_route() {
        let with = |pro: &str| {
            table(&format!(
                "[[routes]]\nname = \"a\"\npath = \"/a\"\n\
                 rate_limits = [{{ by = \"ip\", limit = 10, per = \"1m\", \
                 tier_claim = \"plan\", tiers = {{ pro = {pro} }} }}]\n"
            ))
        };
        let lines = changes(
            &with("{ limit = 100 }"),
            &with("{ limit = 200, burst = 50 }"),
        );
        assert_eq!(
            lines,
            [
                "changed route \"a\": limits ip:10/1m tiers by plan: pro 100 -> \
              ip:10/1m tiers by plan: pro 200 burst 50"
            ]
        );
    }

    /// The audit's case: one route moved ahead past another, with a
    /// removal before both; the route it passed kept its index and used
    /// to be listed as `reordered route "admin": #3 -> #3`.
    #[test]
    fn only_the_route_that_moved_is_reordered() {
        let route = |name: &str| format!("[[routes]]\nname = \"{name}\"\npath = \"/{name}\"\n");
        let old = table(&["h", "e", "admin", "r", "v"].map(route).concat());
        let new = table(&["e", "r", "admin", "v"].map(route).concat());
        assert_eq!(
            changes(&old, &new),
            [
                "removed route \"h\" (was #1)",
                "reordered route \"r\": #4 -> #2"
            ]
        );
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
