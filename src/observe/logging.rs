//! Logging: JSON lines on stdout (every stdout line is JSON in that format),
//! or human-readable lines in development. Span fields (the request's
//! `request_id`) are copied onto every line logged inside the span, at the
//! top level, so `jq 'select(.request_id == ...)'` finds them all.

use std::io::Write;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::prelude::*;
use tracing_subscriber::registry::LookupSpan;

/// The level names `log.level` and `--log-level` accept.
const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];

/// Checks a `log.level` / `--log-level` value: a level name, or a filter
/// of comma-separated `target=level` directives beside at most level names.
/// `EnvFilter` alone takes any bare word as a target to log at every level
/// and turns everything else off, so a typo (`verbose`, `warning`) would
/// silently stop all logging.
pub fn check_level(text: &str) -> Result<(), String> {
    let is_level = |word: &str| LEVELS.iter().any(|l| word.eq_ignore_ascii_case(l));
    let well_formed = !text.trim().is_empty()
        && text.split(',').all(|directive| {
            let directive = directive.trim();
            match directive.rsplit_once('=') {
                Some((target, level)) => !target.trim().is_empty() && is_level(level.trim()),
                None => is_level(directive),
            }
        });
    if !well_formed {
        return Err(format!(
            "\"{text}\" is not a log level or filter; accepted: off, error, warn, info, debug, trace, or target=level directives"
        ));
    }
    EnvFilter::try_new(text)
        .map(|_| ())
        .map_err(|e| format!("\"{text}\" is not a log level or filter ({e})"))
}

/// Installs the global subscriber. `RUST_LOG`, when set, overrides `level`.
/// Returns false if one was already installed (tests, a second call).
pub fn init(json: bool, level: &str) -> LogGuard {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    // Lines are handed to a writer thread: no write syscall on the request
    // path. Not lossy: a stalled stdout slows logging down, it never drops lines.
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .thread_name("palisade-log")
        .finish(std::io::stdout());
    let registry = tracing_subscriber::registry().with(filter);
    let installed = if json {
        registry.with(JsonLayer { writer }).try_init().is_ok()
    } else {
        registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
                    .with_writer(writer),
            )
            .try_init()
            .is_ok()
    };
    LogGuard {
        _worker: installed.then_some(guard),
    }
}

/// Keeps the log writer thread; dropping it (at exit) flushes pending lines.
pub struct LogGuard {
    _worker: Option<tracing_appender::non_blocking::WorkerGuard>,
}

/// The access line's fields (SPEC §5).
const ACCESS_FIELDS: [&str; 11] = [
    "request_id",
    "method",
    "path",
    "route",
    "status",
    "duration_ms",
    "upstream_ms",
    "client_ip",
    "user",
    "bytes_in",
    "bytes_out",
];

/// Writes one JSON object per event.
pub struct JsonLayer {
    writer: tracing_appender::non_blocking::NonBlocking,
}

struct SpanFields(Map<String, Value>);

struct JsonVisitor<'a>(&'a mut Map<String, Value>);

impl Visit for JsonVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), Value::from(value));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), Value::from(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), Value::from(value));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().into(), Value::from(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), Value::from(value));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0
            .insert(field.name().into(), Value::from(format!("{value:?}")));
    }
}

impl<S> Layer<S> for JsonLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut fields = Map::new();
        attrs.record(&mut JsonVisitor(&mut fields));
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(SpanFields(fields));
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id)
            && let Some(fields) = span.extensions_mut().get_mut::<SpanFields>()
        {
            values.record(&mut JsonVisitor(&mut fields.0));
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let meta = event.metadata();
        let mut line = Map::new();
        line.insert(
            "timestamp".into(),
            Value::from(humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()),
        );
        line.insert("level".into(), Value::from(meta.level().as_str()));
        line.insert("target".into(), Value::from(meta.target()));
        event.record(&mut JsonVisitor(&mut line));
        if meta.target() == super::access::ACCESS_TARGET {
            // Every access line has every field of SPEC §5: `null` where
            // one does not apply (no `user` on an open route, no
            // `upstream_ms` for palisade's own answers), never left out.
            for field in ACCESS_FIELDS {
                line.entry(field).or_insert(Value::Null);
            }
        }
        if let Some(scope) = ctx.event_scope(event) {
            for span in scope.from_root() {
                if let Some(fields) = span.extensions().get::<SpanFields>() {
                    for (key, value) in &fields.0 {
                        line.entry(key.clone()).or_insert_with(|| value.clone());
                    }
                }
            }
        }
        let mut text = Value::Object(line).to_string();
        text.push('\n');
        let _ = self.writer.clone().write_all(text.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn log_levels_are_names_or_directives() {
        for ok in [
            "info",
            "WARN",
            "off",
            "trace",
            "info,palisade=debug",
            "hyper=warn",
        ] {
            assert!(super::check_level(ok).is_ok(), "{ok}");
        }
        for bad in ["verbose", "warning", "", "info,loud", "x=loud", "=info"] {
            assert!(super::check_level(bad).is_err(), "{bad}");
        }
    }
}
