//! The presets of SPEC §6.1: each is the default settings of the custom
//! form, which any key in the file overrides.

use std::time::Duration;

use base64::Engine;

use super::{Algorithm, Encoding, Layout};

/// The names `preset` accepts.
pub const NAMES: [&str; 4] = ["github", "stripe", "slack", "standard-webhooks"];

/// The default timestamp tolerance (every preset that signs one, and the
/// custom form with a `timestamp_header`).
pub const DEFAULT_TOLERANCE: Duration = Duration::from_secs(300);

/// A preset's settings (or the custom form's defaults).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Preset {
    /// How the signature header is laid out.
    pub layout: Layout,
    /// The signature header (`None`: the custom form must name one).
    pub header: Option<&'static str>,
    /// The hash.
    pub algorithm: Algorithm,
    /// The signature encoding.
    pub encoding: Encoding,
    /// Removed before decoding.
    pub prefix: &'static str,
    /// The timestamp header.
    pub timestamp_header: Option<&'static str>,
    /// The delivery-id header.
    pub id_header: Option<&'static str>,
    /// The signed template.
    pub signed: &'static str,
    /// Whether the layout carries the timestamp in the signature header.
    pub timestamp_in_header: bool,
    /// Secrets are `whsec_<base64>`, used decoded.
    pub whsec: bool,
}

/// The custom form's defaults (no `preset`).
pub const CUSTOM: Preset = Preset {
    layout: Layout::Single,
    header: None,
    algorithm: Algorithm::Sha256,
    encoding: Encoding::Hex,
    prefix: "",
    timestamp_header: None,
    id_header: None,
    signed: "{body}",
    timestamp_in_header: false,
    whsec: false,
};

/// The preset called `name`.
pub fn preset(name: &str) -> Option<Preset> {
    Some(match name {
        "github" => Preset {
            header: Some("x-hub-signature-256"),
            prefix: "sha256=",
            ..CUSTOM
        },
        "stripe" => Preset {
            layout: Layout::Stripe,
            header: Some("stripe-signature"),
            prefix: "v1=",
            signed: "{timestamp}.{body}",
            timestamp_in_header: true,
            ..CUSTOM
        },
        "slack" => Preset {
            header: Some("x-slack-signature"),
            prefix: "v0=",
            timestamp_header: Some("x-slack-request-timestamp"),
            signed: "v0:{timestamp}:{body}",
            ..CUSTOM
        },
        "standard-webhooks" => Preset {
            layout: Layout::List,
            header: Some("webhook-signature"),
            encoding: Encoding::Base64,
            prefix: "v1,",
            timestamp_header: Some("webhook-timestamp"),
            id_header: Some("webhook-id"),
            signed: "{id}.{timestamp}.{body}",
            whsec: true,
            ..CUSTOM
        },
        _ => return None,
    })
}

/// The key bytes of a configured secret: as given, or for `whsec`
/// presets the base64 after `whsec_` decoded.
pub fn secret_bytes(whsec: bool, text: &str) -> Result<Vec<u8>, String> {
    if !whsec {
        return Ok(text.as_bytes().to_vec());
    }
    let encoded = text.strip_prefix("whsec_").unwrap_or(text);
    base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()
        .filter(|key| !key.is_empty())
        .ok_or_else(|| "must be \"whsec_\" followed by base64 (the key)".to_string())
}
