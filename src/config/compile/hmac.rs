//! `[auth.hmac.NAME]` compiled into signature verifiers: the preset's
//! settings, then every key the file sets, then the checks `check` reports
//! (a template using `{timestamp}` or `{id}` without its header, replay
//! protection without a timestamp, empty secrets).

use super::{Compiler, Result};
use crate::config::choices::{HmacAlgorithm, HmacEncoding};
use crate::config::file::HmacFile;
use crate::config::keys::KeyPath;
use crate::config::values::UNSET_PLACEHOLDER;
use crate::policy::auth::hmac::presets::{self, CUSTOM, DEFAULT_TOLERANCE};
use crate::policy::auth::hmac::{
    Algorithm, Encoding, HmacSettings, HmacVerifier, Piece, parse_template,
};

impl Compiler<'_> {
    pub(super) fn hmac(&self, name: &str, h: &HmacFile) -> Result<HmacVerifier> {
        let key = KeyPath::from("auth.hmac").key(name);
        let preset = match h.preset {
            Some(p) => presets::preset(p.as_str()).unwrap_or(CUSTOM),
            None => CUSTOM,
        };
        let header = match (&h.header, preset.header) {
            (Some(text), _) => self.header_name(text, key.key("header"))?,
            (None, Some(default)) => http::HeaderName::from_static(default),
            (None, None) => {
                return Err(self.err(
                    key.key("header"),
                    format!(
                        "is required without a preset (or set preset = one of {})",
                        presets::NAMES.join(", ")
                    ),
                ));
            }
        };
        let optional_header = |value: &Option<crate::config::values::Text>,
                               default: Option<&'static str>,
                               at: &str| {
            match value {
                Some(text) if text.as_str().is_empty() => Ok(None),
                Some(text) => self.header_name(text, key.key(at)).map(Some),
                None => Ok(default.map(http::HeaderName::from_static)),
            }
        };
        let timestamp_header = optional_header(
            &h.timestamp_header,
            preset.timestamp_header,
            "timestamp_header",
        )?;
        let id_header = optional_header(&h.id_header, preset.id_header, "id_header")?;
        let template = h.signed.as_ref().map_or(preset.signed, |t| t.as_str());
        let signed = parse_template(template).map_err(|m| self.err(key.key("signed"), m))?;
        let has_timestamp = timestamp_header.is_some() || preset.timestamp_in_header;
        if !signed.contains(&Piece::Body) {
            return Err(self.err(
                key.key("signed"),
                "must include {body}: a signature that does not cover the body authenticates any body",
            ));
        }
        if signed.contains(&Piece::Timestamp) && !has_timestamp {
            return Err(self.err(
                key.key("signed"),
                "uses {timestamp} but no timestamp_header is set",
            ));
        }
        if signed.contains(&Piece::Id) && id_header.is_none() {
            return Err(self.err(key.key("signed"), "uses {id} but no id_header is set"));
        }
        // A timestamp or id the signature does not cover can be rewritten
        // by whoever replays a captured delivery: `tolerance` and `replay`
        // would then refuse nothing.
        let unsigned = [
            (
                has_timestamp,
                Piece::Timestamp,
                "timestamp_header",
                "{timestamp}",
            ),
            (id_header.is_some(), Piece::Id, "id_header", "{id}"),
        ];
        for (sent, piece, header_key, placeholder) in unsigned {
            if sent && !signed.contains(&piece) {
                let at = if h.signed.is_some() {
                    key.key("signed")
                } else {
                    key.key(header_key)
                };
                return Err(self.err(
                    at,
                    format!(
                        "{header_key} is set but the signed template does not include \
                         {placeholder}: a replayed delivery could carry a fresh one"
                    ),
                ));
            }
        }
        let tolerance = self.hmac_tolerance(h, &key, has_timestamp)?;
        Ok(HmacVerifier::new(
            name,
            HmacSettings {
                layout: preset.layout,
                header,
                algorithm: h.algorithm.map_or(preset.algorithm, |a| match a {
                    HmacAlgorithm::Sha256 => Algorithm::Sha256,
                    HmacAlgorithm::Sha512 => Algorithm::Sha512,
                }),
                encoding: h.encoding.map_or(preset.encoding, |e| match e {
                    HmacEncoding::Hex => Encoding::Hex,
                    HmacEncoding::Base64 => Encoding::Base64,
                }),
                prefix: h
                    .prefix
                    .as_ref()
                    .map_or(preset.prefix, |p| p.as_str())
                    .to_string(),
                timestamp_header,
                id_header,
                signed,
                tolerance,
                replay: h.replay,
                secrets: self.hmac_secrets(h, &key, preset.whsec)?,
            },
        ))
    }

    /// `tolerance`: 5m by default where a timestamp is sent; `replay`
    /// needs one (a signature is remembered while it is acceptable).
    fn hmac_tolerance(
        &self,
        h: &HmacFile,
        key: &KeyPath,
        has_timestamp: bool,
    ) -> Result<Option<std::time::Duration>> {
        if let Some(t) = &h.tolerance {
            if !has_timestamp {
                return Err(self.err(
                    key.key("tolerance"),
                    "needs a timestamp: set timestamp_header",
                ));
            }
            if t.0.as_secs() == 0 {
                return Err(self.err(key.key("tolerance"), "must be at least 1s"));
            }
        }
        if h.replay && !has_timestamp {
            return Err(self.err(
                key.key("replay"),
                "needs a signed timestamp (timestamp_header): a signature is remembered for the tolerance",
            ));
        }
        Ok(has_timestamp.then(|| h.tolerance.as_ref().map_or(DEFAULT_TOLERANCE, |t| t.0)))
    }

    /// `secret` or `secrets` (exactly one), none empty, `whsec_` decoded
    /// for standard-webhooks.
    fn hmac_secrets(&self, h: &HmacFile, key: &KeyPath, whsec: bool) -> Result<Vec<Vec<u8>>> {
        let (values, at): (Vec<&str>, Box<dyn Fn(usize) -> KeyPath>) = match (&h.secret, &h.secrets)
        {
            (Some(v), None) => (vec![v.0.as_str()], Box::new(|_| key.key("secret"))),
            (None, Some(vs)) if !vs.is_empty() => (
                vs.iter().map(|v| v.0.as_str()).collect(),
                Box::new(|i| key.key("secrets").at(i)),
            ),
            (Some(_), Some(_)) => {
                return Err(self.err(
                    key.key("secrets"),
                    "set exactly one of `secret` or `secrets`",
                ));
            }
            _ => return Err(self.err(key, "set `secret` (or `secrets` during rotation)")),
        };
        let mut secrets = Vec::new();
        for (i, value) in values.into_iter().enumerate() {
            if value.is_empty() {
                return Err(self.err(
                    at(i),
                    "must not be empty (is the environment variable set?)",
                ));
            }
            // `check` without the variable set: a placeholder, not base64.
            let whsec = whsec && !value.starts_with(UNSET_PLACEHOLDER);
            secrets.push(presets::secret_bytes(whsec, value).map_err(|m| self.err(at(i), m))?);
        }
        Ok(secrets)
    }
}
