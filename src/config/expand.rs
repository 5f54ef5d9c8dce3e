//! `${VAR}` and `${VAR:-default}` inside string values, so secrets and
//! per-deployment values come from the environment, never from the file.
//! The lookup is passed in (an [`Env`]) so tests need no `set_var`.

use std::collections::HashMap;

/// The variables a config load may read. Built from the process environment
/// in production and from a literal map in tests.
#[derive(Debug, Clone, Default)]
pub struct Env {
    vars: HashMap<String, String>,
    lenient_secrets: bool,
}

impl Env {
    /// A snapshot of the process environment.
    pub fn from_process() -> Self {
        Self {
            vars: std::env::vars().collect(),
            lenient_secrets: false,
        }
    }

    /// For `check`: a secret value whose variable is unset gets a placeholder
    /// (and is reported) instead of failing, so policy files can be
    /// validated where production secrets are not available. Every other
    /// unset variable is still an error, and `run` never does this.
    pub fn lenient_secrets(mut self) -> Self {
        self.lenient_secrets = true;
        self
    }

    /// Whether secrets may be left unset (see [`Env::lenient_secrets`]).
    pub fn is_lenient_for_secrets(&self) -> bool {
        self.lenient_secrets
    }

    /// An environment holding exactly these pairs.
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        Self {
            vars: pairs
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            lenient_secrets: false,
        }
    }

    /// Adds or replaces one variable (used by `demo` for generated values).
    pub fn set(&mut self, name: &str, value: String) {
        self.vars.insert(name.to_string(), value);
    }

    /// The value of `name`, if set.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.vars.get(name).map(String::as_str)
    }
}

/// Expands every `${VAR}` / `${VAR:-default}` in `text`. `$${` stays a
/// literal `${`. An unset variable without a default is an error naming it.
pub fn expand(text: &str, env: &Env) -> Result<String, String> {
    if !text.contains('$') {
        return Ok(text.to_string());
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos..];
        if let Some(escaped) = after.strip_prefix("$${") {
            out.push_str("${");
            rest = escaped;
            continue;
        }
        if !after.starts_with("${") {
            out.push('$');
            rest = &after[1..];
            continue;
        }
        let body_end = after.find('}').ok_or_else(|| {
            format!("unterminated \"${{\" in \"{text}\"; write ${{VAR}} or ${{VAR:-default}}")
        })?;
        let body = &after[2..body_end];
        let (name, default) = match body.find(":-") {
            Some(i) => (&body[..i], Some(&body[i + 2..])),
            None => (body, None),
        };
        if !is_var_name(name) {
            return Err(format!(
                "invalid variable name \"{name}\" in \"{text}\"; names are letters, digits and _"
            ));
        }
        // As in the shell and Docker Compose, `:-` also replaces a value
        // set but empty (an empty `LISTEN=` in a manifest is not meant).
        match (env.get(name), default) {
            (Some(value), None) => out.push_str(value),
            (Some(value), Some(_)) if !value.is_empty() => out.push_str(value),
            (_, Some(default)) => out.push_str(default),
            (None, None) => {
                return Err(format!(
                    "environment variable {name} is not set (referenced as ${{{name}}}; set it, or write ${{{name}:-default}})"
                ));
            }
        }
        rest = &after[body_end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Names of variables referenced without a default by the string values of
/// a TOML document (comments are not values). `demo` uses it to generate
/// development values for the unset ones.
pub fn required_vars_of_toml(text: &str) -> Vec<String> {
    fn walk(value: &toml::Value, names: &mut Vec<String>) {
        match value {
            toml::Value::String(s) => {
                for name in required_vars(s) {
                    if !names.contains(&name) {
                        names.push(name);
                    }
                }
            }
            toml::Value::Array(items) => items.iter().for_each(|v| walk(v, names)),
            toml::Value::Table(table) => table.values().for_each(|v| walk(v, names)),
            _ => {}
        }
    }
    let mut names = Vec::new();
    if let Ok(value) = toml::from_str::<toml::Value>(text) {
        walk(&value, &mut names);
    }
    names
}

/// Names of variables referenced without a default, in order of appearance.
pub fn required_vars(text: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = text;
    while let Some(pos) = rest.find("${") {
        let after = &rest[pos + 2..];
        let Some(end) = after.find('}') else { break };
        let body = &after[..end];
        if !body.contains(":-") && is_var_name(body) && !names.iter().any(|n| n == body) {
            names.push(body.to_string());
        }
        rest = &after[end..];
    }
    names
}

fn is_var_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expands_set_and_default() {
        let env = Env::from_pairs([("A", "alpha"), ("EMPTY", "")]);
        assert_eq!(expand("x-${A}-y", &env).unwrap(), "x-alpha-y");
        assert_eq!(expand("${B:-beta}", &env).unwrap(), "beta");
        assert_eq!(expand("${A:-beta}", &env).unwrap(), "alpha");
        // Set but empty: `:-` takes the default, as the shell does.
        assert_eq!(expand("${EMPTY:-d}", &env).unwrap(), "d");
        assert_eq!(expand("${EMPTY}", &env).unwrap(), "");
        assert_eq!(expand("no vars", &env).unwrap(), "no vars");
        assert_eq!(expand("cost $5", &env).unwrap(), "cost $5");
        assert_eq!(expand("$${A}", &env).unwrap(), "${A}");
    }

    #[test]
    fn unset_without_default_names_the_variable() {
        let err = expand("${SUPABASE_JWT_SECRET}", &Env::default()).unwrap_err();
        assert!(err.contains("SUPABASE_JWT_SECRET"), "{err}");
        assert!(expand("${unterminated", &Env::default()).is_err());
        assert!(expand("${1BAD}", &Env::default()).is_err());
    }

    #[test]
    fn lists_required_variables() {
        let text = "a = \"${X}\"\nb = \"${Y:-1}\"\nc = \"${Z}${X}\"";
        assert_eq!(required_vars(text), vec!["X".to_string(), "Z".to_string()]);
        let toml_text = "# c = \"${IN_COMMENT}\"\na = \"${X}\"\n[t]\nb = [\"${Y}\"]\n";
        assert_eq!(
            required_vars_of_toml(toml_text),
            vec!["X".to_string(), "Y".to_string()]
        );
    }
}
