//! `[cors]` and `[security_headers]` compiled into header values.

use http::{HeaderName, HeaderValue, Method};

use super::{Compiler, Result};
use crate::config::file::{CorsFile, FileConfig, SecurityHeadersFile};
use crate::config::keys::KeyPath;
use crate::policy::cors::CorsPolicy;
use crate::policy::headers::{REMOVE_RESPONSE_HEADERS, SECURITY_HEADERS, SecurityHeaders};

impl Compiler<'_> {
    pub(super) fn cors(&self, file: &FileConfig) -> Result<Option<CorsPolicy>> {
        let Some(c) = &file.cors else { return Ok(None) };
        let origins_list = &c.allow_origins.0;
        let any_origin = origins_list.iter().any(|o| o == "*");
        if any_origin && c.allow_credentials {
            return Err(self.err(
                "cors.allow_origins",
                "[\"*\"] cannot be combined with allow_credentials = true (browsers refuse it, and it would let any site act as the user); list exact origins",
            ));
        }
        let origins = self.origins(c)?;
        for (i, method) in c.allow_methods.0.iter().enumerate() {
            Method::from_bytes(method.as_bytes()).map_err(|_| {
                self.err(
                    format!("cors.allow_methods[{i}]"),
                    format!("\"{method}\" is not an HTTP method"),
                )
            })?;
        }
        for (list, key) in [
            (&c.allow_headers.0, "cors.allow_headers"),
            (&c.expose_headers.0, "cors.expose_headers"),
        ] {
            for (i, name) in list.iter().enumerate() {
                HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                    self.err(
                        format!("{key}[{i}]"),
                        format!("\"{name}\" is not a valid header name"),
                    )
                })?;
            }
        }
        let join = |list: &[String], key: &str| {
            HeaderValue::from_str(&list.join(", "))
                .map_err(|_| self.err(key, "contains characters not allowed in a header"))
        };
        Ok(Some(
            CorsPolicy {
                origins,
                any_origin,
                credentials: c.allow_credentials,
                allow_methods: join(&c.allow_methods.0, "cors.allow_methods")?,
                allow_headers: join(&c.allow_headers.0, "cors.allow_headers")?,
                expose_headers: if c.expose_headers.0.is_empty() {
                    None
                } else {
                    Some(join(&c.expose_headers.0, "cors.expose_headers")?)
                },
                max_age: HeaderValue::from(c.max_age.0.as_secs()),
                answers: Vec::new(),
                unset: Default::default(),
            }
            .answering(),
        ))
    }

    /// `cors.allow_origins` without `"*"`: exact origins (or `"null"`).
    fn origins(&self, c: &CorsFile) -> Result<Vec<HeaderValue>> {
        let mut origins = Vec::new();
        for (i, origin) in c.allow_origins.0.iter().enumerate() {
            if origin == "*" {
                continue;
            }
            let key = format!("cors.allow_origins[{i}]");
            let valid = (origin.starts_with("https://") || origin.starts_with("http://"))
                && !origin.trim_end_matches('/').ends_with("://")
                && !origin.ends_with('/')
                && origin
                    .parse::<http::Uri>()
                    .is_ok_and(|u| u.path() == "/" && u.query().is_none());
            if !valid && origin != "null" {
                return Err(self.err(
                    key,
                    format!("\"{origin}\" is not an origin; write scheme://host[:port] with no path or trailing slash, e.g. \"https://app.example.com\""),
                ));
            }
            origins.push(
                HeaderValue::from_str(origin).map_err(|_| {
                    self.err(key, format!("\"{origin}\" is not a valid header value"))
                })?,
            );
        }
        Ok(origins)
    }

    /// One security-header set (`[security_headers]`, or the merge of a
    /// route's overrides onto it), driven by [`SECURITY_HEADERS`].
    pub(super) fn security_headers(
        &self,
        s: &SecurityHeadersFile,
        key: &KeyPath,
    ) -> Result<SecurityHeaders> {
        let (mut always, mut https_only, mut remove) = (Vec::new(), Vec::new(), Vec::new());
        for (entry, text) in SECURITY_HEADERS.iter().zip(&s.values) {
            if text.as_str().is_empty() {
                continue;
            }
            let value = HeaderValue::from_str(text.as_str()).map_err(|_| {
                self.err(
                    key.key(entry.key),
                    format!("\"{text}\" is not a valid header value"),
                )
            })?;
            let set = if entry.https_only {
                &mut https_only
            } else {
                &mut always
            };
            set.push((HeaderName::from_static(entry.name), value));
        }
        for (i, name) in s.remove_response_headers.iter().enumerate() {
            remove.push(self.header_name(name, key.key(REMOVE_RESPONSE_HEADERS).at(i))?);
        }
        Ok(SecurityHeaders::new(always, https_only, remove))
    }
}
