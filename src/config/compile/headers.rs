//! `[cors]` and `[security_headers]` compiled into header values.

use super::*;

impl Compiler<'_> {
    pub(super) fn cors(&self, file: &FileConfig) -> Result<Option<CorsPolicy>> {
        let Some(c) = &file.cors else { return Ok(None) };
        let span = c.allow_origins.span();
        let origins_list = &c.allow_origins.get_ref().0;
        let any_origin = origins_list.iter().any(|o| o == "*");
        if any_origin && c.allow_credentials {
            return Err(self.err(
                span,
                "cors.allow_origins",
                "[\"*\"] cannot be combined with allow_credentials = true (browsers refuse it, and it would let any site act as the user); list exact origins",
            ));
        }
        let mut origins = Vec::new();
        for origin in origins_list.iter().filter(|o| *o != "*") {
            let valid = (origin.starts_with("https://") || origin.starts_with("http://"))
                && !origin.trim_end_matches('/').ends_with("://")
                && !origin.ends_with('/')
                && origin
                    .parse::<http::Uri>()
                    .is_ok_and(|u| u.path() == "/" && u.query().is_none());
            if !valid && origin != "null" {
                return Err(self.err(
                    span,
                    "cors.allow_origins",
                    format!("\"{origin}\" is not an origin; write scheme://host[:port] with no path or trailing slash, e.g. \"https://app.example.com\""),
                ));
            }
            origins.push(HeaderValue::from_str(origin).map_err(|_| {
                self.err(
                    span.clone(),
                    "cors.allow_origins",
                    format!("\"{origin}\" is not a valid header value"),
                )
            })?);
        }
        for method in &c.allow_methods.0 {
            Method::from_bytes(method.as_bytes()).map_err(|_| {
                self.err(
                    0..0,
                    "cors.allow_methods",
                    format!("\"{method}\" is not an HTTP method"),
                )
            })?;
        }
        for (list, key) in [
            (&c.allow_headers.0, "cors.allow_headers"),
            (&c.expose_headers.0, "cors.expose_headers"),
        ] {
            for name in list {
                HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                    self.err(0..0, key, format!("\"{name}\" is not a valid header name"))
                })?;
            }
        }
        let join = |list: &[String], key: &str| {
            HeaderValue::from_str(&list.join(", "))
                .map_err(|_| self.err(0..0, key, "contains characters not allowed in a header"))
        };
        Ok(Some(CorsPolicy {
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
        }))
    }

    pub(super) fn security_headers(
        &self,
        s: &SecurityHeadersFile,
        key: &str,
    ) -> Result<SecurityHeaders> {
        let fields: [(&str, &Text); 7] = [
            ("x-content-type-options", &s.x_content_type_options),
            ("x-frame-options", &s.x_frame_options),
            ("x-xss-protection", &s.x_xss_protection),
            ("referrer-policy", &s.referrer_policy),
            ("content-security-policy", &s.content_security_policy),
            ("permissions-policy", &s.permissions_policy),
            ("cross-origin-opener-policy", &s.cross_origin_opener_policy),
        ];
        let value = |name: &str, text: &Text| {
            HeaderValue::from_str(text.as_str()).map_err(|_| {
                self.err(
                    0..0,
                    format!("{key}.{}", name.replace('-', "_")),
                    format!("\"{text}\" is not a valid header value"),
                )
            })
        };
        let mut always = Vec::new();
        for (name, text) in fields {
            if !text.as_str().is_empty() {
                always.push((HeaderName::from_static(name), value(name, text)?));
            }
        }
        let hsts = if s.strict_transport_security.as_str().is_empty() {
            None
        } else {
            Some(value(
                "strict-transport-security",
                &s.strict_transport_security,
            )?)
        };
        let mut remove = Vec::new();
        for name in &s.remove_response_headers {
            remove.push(
                HeaderName::from_bytes(name.as_str().as_bytes()).map_err(|_| {
                    self.err(
                        0..0,
                        format!("{key}.remove_response_headers"),
                        format!("\"{name}\" is not a valid header name"),
                    )
                })?,
            );
        }
        Ok(SecurityHeaders {
            always,
            hsts,
            remove,
        })
    }
}
