//! Keys that take one of a fixed set of words (`environment`, `log.format`,
//! `upstream.retry.on`, the `[ratelimit]` modes): each is an enum that
//! serde rejects with the accepted values listed, after `${VAR}` expansion
//! like every other string value.

use std::fmt;

use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize, Serializer};

use super::values::{expand_here, from_str_value};

/// Declares an enum read from and written as one of the given words.
macro_rules! word_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $word:literal,)+ }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum $name {
            $($(#[$vmeta])* $variant,)+
        }

        impl $name {
            /// The accepted words, as the file spells them.
            pub const WORDS: &'static [&'static str] = &[$($word),+];

            /// The word for this value.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $word,)+
                }
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                from_str_value(d, |raw| match expand_here(raw)?.as_str() {
                    $($word => Ok(Self::$variant),)+
                    other => Err(
                        <de::value::Error as de::Error>::unknown_variant(other, Self::WORDS)
                            .to_string(),
                    ),
                })
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

word_enum! {
    /// `server.environment`.
    Environment {
        /// Generic error details.
        Production = "production",
        /// Detailed error text, pretty logs.
        Development = "development",
    }
}

word_enum! {
    /// `server.http1_engine`: what serves plaintext HTTP/1.1 connections.
    Http1Engine {
        /// hyper's HTTP/1 server (and client) for every request.
        Hyper = "hyper",
        /// palisade's own (the default, for speed): on the server side for
        /// requests without a body (the rest of a connection goes to hyper
        /// at the first other request); upstream for requests whose body is
        /// in memory.
        Palisade = "palisade",
    }
}

word_enum! {
    /// `log.format`.
    LogFormat {
        /// JSON lines.
        Json = "json",
        /// For humans.
        Pretty = "pretty",
    }
}

word_enum! {
    /// One entry of `upstream.retry.on`.
    RetryOn {
        /// The upstream connection could not be made.
        ConnectFailure = "connect-failure",
        /// The upstream answered 502.
        Status502 = "502",
        /// The upstream answered 503.
        Status503 = "503",
        /// The upstream answered 504.
        Status504 = "504",
        /// The connection was reset before a response.
        Reset = "reset",
    }
}

word_enum! {
    /// `ratelimit.backend`.
    Backend {
        /// Per instance.
        Memory = "memory",
        /// Shared through Redis.
        Redis = "redis",
    }
}

word_enum! {
    /// `ratelimit.on_redis_error`.
    RedisErrorMode {
        /// A per-instance limiter decides.
        Local = "local",
        /// The request passes.
        Allow = "allow",
        /// 503.
        Deny = "deny",
    }
}

word_enum! {
    /// `ratelimit.headers`.
    RateHeaders {
        /// `X-RateLimit-*`.
        Legacy = "legacy",
        /// `RateLimit`, `RateLimit-Policy`.
        Draft = "draft",
        /// Both sets.
        Both = "both",
        /// No rate-limit headers.
        None = "none",
    }
}

impl RetryOn {
    /// The upstream status this condition retries on, if it is one.
    pub fn status(self) -> Option<u16> {
        match self {
            Self::Status502 => Some(502),
            Self::Status503 => Some(503),
            Self::Status504 => Some(504),
            Self::ConnectFailure | Self::Reset => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    struct Holder {
        format: LogFormat,
    }

    #[test]
    fn words_round_trip_and_unknown_ones_list_the_accepted() {
        let held: Holder = toml::from_str("format = \"pretty\"").unwrap();
        assert_eq!(held.format, LogFormat::Pretty);
        let err = toml::from_str::<Holder>("format = \"xml\"").unwrap_err();
        assert!(
            err.message().contains("`xml`") && err.message().contains("`json` or `pretty`"),
            "{}",
            err.message()
        );
        assert_eq!(RetryOn::Status503.status(), Some(503));
        assert_eq!(RetryOn::Reset.to_string(), "reset");
    }
}

word_enum! {
    /// `auth.hmac.NAME.preset`.
    HmacPresetName {
        /// `X-Hub-Signature-256: sha256=<hex>`.
        Github = "github",
        /// `Stripe-Signature: t=..,v1=..`.
        Stripe = "stripe",
        /// `X-Slack-Signature: v0=..` with `X-Slack-Request-Timestamp`.
        Slack = "slack",
        /// `webhook-id`, `webhook-timestamp`, `webhook-signature`.
        StandardWebhooks = "standard-webhooks",
    }
}

word_enum! {
    /// `auth.hmac.NAME.algorithm`.
    HmacAlgorithm {
        /// HMAC-SHA256.
        Sha256 = "sha256",
        /// HMAC-SHA512.
        Sha512 = "sha512",
    }
}

word_enum! {
    /// `auth.hmac.NAME.encoding`.
    HmacEncoding {
        /// Hex digits.
        Hex = "hex",
        /// Standard base64.
        Base64 = "base64",
    }
}
