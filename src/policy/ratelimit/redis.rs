//! The Redis backend: one Lua script evaluates **all** of a request's limits
//! in one round trip, atomically, on Redis' own clock (`TIME`), so any number
//! of palisade instances share each bucket exactly. Keys carry a TTL so idle
//! buckets expire. One multiplexed connection serves every request.
//!
//! Under load, decisions are batched: while calls are in flight, newly
//! queued requests are collected and sent together in one script call, which
//! processes them in order (so exactness is unchanged) and shares the
//! script's fixed costs (`TIME`, invocation, round trip) across the batch.
//! With no contention a request goes alone, without waiting.
//!
//! Outages: every call is bounded by `redis_timeout` (a decision, by its
//! deadline carried into its batch: one timer per batch, not one per
//! request); after an error Redis is
//! skipped for a cool-down (1 s, doubling to 30 s while errors go on), so an
//! outage never makes every request wait. One request probes when a
//! cool-down ends; its success ends the outage.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use tokio::sync::{OnceCell, mpsc, oneshot};

pub use self::health::{Health, MAX_COOLDOWN, MIN_COOLDOWN};
use super::gcra::Gcra;

mod health;
mod seen;

/// The script. `ARGV[1]` is the number of requests; `ARGV[2]` holds, per
/// request, its number of limits followed by three numbers per limit:
/// emission interval (µs), burst, enforce (1) or shadow (0), all in one
/// string separated by spaces (one argument for the whole batch: an
/// argument each cost the client an allocation and two copies, and was
/// most of a batch's cost on palisade's side, measured). `KEYS` are every
/// request's keys in order. A request is admitted when every enforced
/// limit admits it; only then are its admitting buckets updated. Returns
/// `now (admitted (allowed_i tat_i - now)...)...` as one string of
/// integers separated by spaces: one bulk reply, where an array of
/// integers made the client parse one reply per number, and each `tat`
/// less `now` (never negative), a few digits where the timestamp had
/// sixteen. Each is written with `%d`: Lua's own number to text would
/// round a microsecond timestamp.
pub const GCRA_SCRIPT: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local out = {string.format('%d', now)}
local args = {}
for word in string.gmatch(ARGV[2], '%S+') do
  args[#args + 1] = word
end
local k = 0
local a = 1
for r = 1, tonumber(ARGV[1]) do
  local n = tonumber(args[a])
  a = a + 1
  local prev, cand, ok = {}, {}, {}
  local admit = 1
  for i = 1, n do
    local T = tonumber(args[a])
    local burst = tonumber(args[a + 1])
    local stored = redis.call('GET', KEYS[k + i])
    local tat = now
    if stored then
      tat = math.max(tonumber(stored), now)
    end
    prev[i] = tat
    cand[i] = tat + T
    if now < cand[i] - T * burst then
      ok[i] = 0
      if args[a + 2] == '1' then admit = 0 end
    else
      ok[i] = 1
    end
    a = a + 3
  end
  out[#out + 1] = string.format('%d', admit)
  for i = 1, n do
    local tat = prev[i]
    if admit == 1 and ok[i] == 1 then
      tat = cand[i]
      redis.call('SET', KEYS[k + i], string.format('%d', tat), 'PX', math.floor((tat - now) / 1000) + 1000)
    end
    out[#out + 1] = string.format('%d', ok[i])
    out[#out + 1] = string.format('%d', tat - now)
  end
  k = k + n
end
return table.concat(out, ' ')
"#;

/// Most requests one script call decides.
pub const MAX_BATCH: usize = 64;
/// Script calls in flight at once per batcher.
pub const MAX_IN_FLIGHT: usize = 4;

/// The answer for one limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RedisLimitResult {
    /// This limit alone would admit the request.
    pub allowed: bool,
    /// The bucket's `tat` after the call (µs, Redis clock).
    pub tat: i64,
}

/// The answer for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisDecision {
    /// Redis' clock (µs).
    pub now: i64,
    /// Every enforced limit admitted it.
    pub admitted: bool,
    /// Per limit, in call order.
    pub limits: Vec<RedisLimitResult>,
}

/// Why a decision could not come from Redis.
#[derive(Debug, thiserror::Error)]
pub enum RedisFailure {
    /// In a cool-down after an error: Redis was not asked.
    #[error("redis skipped during cool-down")]
    CoolingDown,
    /// Past `redis_timeout`.
    #[error("redis timed out")]
    Timeout,
    /// Redis answered with an error, or the connection failed.
    #[error("redis error: {0}")]
    Redis(#[from] redis::RedisError),
    /// The batch this request was in failed.
    #[error("redis error: {0}")]
    Batch(String),
    /// A reply the script never gives.
    #[error("unexpected redis reply")]
    BadReply,
}

/// The limits of one request: `(key, gcra, enforced)`.
pub type LimitRequest = Vec<(String, Gcra, bool)>;

/// A request waiting in a batch.
struct Pending {
    limits: LimitRequest,
    reply: oneshot::Sender<Result<RedisDecision, Unanswered>>,
    /// `redis_timeout` after it was submitted: its batch is bounded by the
    /// earliest deadline among its requests, and a request still queued
    /// at its deadline is answered without being sent.
    deadline: tokio::time::Instant,
}

/// Why a batch did not decide a request.
#[derive(Debug, Clone)]
enum Unanswered {
    /// Its deadline passed first.
    Timeout,
    /// The script call failed (the error, as text: one per batch).
    Failed(String),
}

enum Target {
    Single(ConnectionManager),
    Cluster(Box<(ClusterClient, OnceCell<ClusterConnection>)>),
}

/// The connection and the script, shared by the batch drivers.
struct Connection {
    target: Target,
    script: redis::Script,
    /// Redis has not been reached since the connection was made: the
    /// warm-up failed and no call has succeeded since (`/readyz` says
    /// `degraded` then, before any request has failed).
    unreached: AtomicBool,
}

/// A shared Redis (or Redis Cluster) target.
pub struct RedisBackend {
    /// What it points at (for reuse across reloads; the URL may hold a password).
    pub identity: String,
    connection: Arc<Connection>,
    timeout: Duration,
    health: Mutex<Health>,
    /// Whether `health` holds an outage (set with it, under its lock): while
    /// it does not, a call neither locks it nor reads the clock.
    in_outage: AtomicBool,
    /// A single node's batcher, started by the first decision (read
    /// without a lock: no map, no hashing per request).
    single: OnceLock<mpsc::UnboundedSender<Pending>>,
    /// A cluster's batchers, one per hash slot tag.
    batchers: Mutex<HashMap<String, mpsc::UnboundedSender<Pending>>>,
}

impl std::fmt::Debug for RedisBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RedisBackend")
    }
}

impl RedisBackend {
    /// Connects lazily: creating it never waits for Redis.
    pub fn new(
        url: &str,
        cluster: &[String],
        timeout: Duration,
        ca: Option<&[u8]>,
    ) -> Result<Self, String> {
        let certificates = || redis::TlsCertificates {
            client_tls: None,
            root_cert: ca.map(<[u8]>::to_vec),
        };
        let target = if cluster.is_empty() {
            let client = match ca {
                Some(_) => redis::Client::build_with_tls(url, certificates()),
                None => redis::Client::open(url),
            }
            .map_err(|e| format!("ratelimit.redis_url: {e}"))?;
            let config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(timeout.max(Duration::from_millis(250))))
                .set_response_timeout(None)
                .set_number_of_retries(2)
                .set_max_delay(Duration::from_millis(500));
            Target::Single(
                ConnectionManager::new_lazy_with_config(client, config)
                    .map_err(|e| format!("ratelimit.redis_url: {e}"))?,
            )
        } else {
            let mut builder = ClusterClient::builder(cluster.to_vec())
                .connection_timeout(timeout.max(Duration::from_millis(250)));
            if ca.is_some() {
                builder = builder.certs(certificates());
            }
            let client = builder
                .build()
                .map_err(|e| format!("ratelimit.redis_cluster: {e}"))?;
            Target::Cluster(Box::new((client, OnceCell::new())))
        };
        let identity = Self::identity_of(url, cluster);
        let connection = Arc::new(Connection {
            target,
            script: redis::Script::new(GCRA_SCRIPT),
            unreached: AtomicBool::new(false),
        });
        connection.warm_up();
        Ok(Self {
            identity,
            connection,
            timeout,
            health: Mutex::new(Health::default()),
            in_outage: AtomicBool::new(false),
            single: OnceLock::new(),
            batchers: Mutex::new(HashMap::new()),
        })
    }

    /// What a backend for these settings points at: reused across reloads
    /// while it stays the same.
    pub fn identity_of(url: &str, cluster: &[String]) -> String {
        if cluster.is_empty() {
            url.to_string()
        } else {
            cluster.join(",")
        }
    }

    /// Whether Redis is currently being skipped after errors.
    pub fn is_degraded(&self) -> bool {
        self.connection.unreached.load(Ordering::Relaxed)
            || self
                .health
                .lock()
                .map_or(true, |h| h.is_degraded(Instant::now()))
    }

    /// Evaluates one request's limits, atomically, within `redis_timeout`
    /// (bounded in its batch: see `spawn_batcher`).
    pub async fn decide(&self, limits: LimitRequest) -> Result<RedisDecision, RedisFailure> {
        self.checked(async {
            let deadline = tokio::time::Instant::now() + self.timeout;
            self.submit(limits, deadline).await
        })
        .await
    }

    /// Runs one call to Redis within `redis_timeout`, [`checked`](Self::checked).
    async fn guarded<T>(
        &self,
        call: impl std::future::Future<Output = Result<T, RedisFailure>>,
    ) -> Result<T, RedisFailure> {
        self.checked(async {
            match tokio::time::timeout(self.timeout, call).await {
                Ok(result) => result,
                Err(_) => Err(RedisFailure::Timeout),
            }
        })
        .await
    }

    /// Runs one call to Redis the way every caller must: skipped during a
    /// cool-down, and its outcome recorded in the backend's health. The
    /// call itself is bounded by `redis_timeout`.
    async fn checked<T>(
        &self,
        call: impl std::future::Future<Output = Result<T, RedisFailure>>,
    ) -> Result<T, RedisFailure> {
        if !self.may_try() {
            return Err(RedisFailure::CoolingDown);
        }
        let result = call.await;
        self.record(&result);
        result
    }

    /// Whether Redis may be asked now: not during a cool-down (one probe
    /// when it ends).
    fn may_try(&self) -> bool {
        !self.in_outage.load(Ordering::Relaxed)
            || self
                .health
                .lock()
                .is_ok_and(|mut h| h.should_try(Instant::now()))
    }

    /// Records a call's outcome in the backend's health.
    fn record<T>(&self, result: &Result<T, RedisFailure>) {
        if result.is_ok() && self.connection.unreached.load(Ordering::Relaxed) {
            self.connection.unreached.store(false, Ordering::Relaxed);
        }
        let record = result.is_err() || self.in_outage.load(Ordering::Relaxed);
        if record && let Ok(mut health) = self.health.lock() {
            match result {
                Ok(_) => health.succeeded(),
                Err(_) => health.failed(Instant::now()),
            }
            self.in_outage.store(result.is_err(), Ordering::Relaxed);
        }
    }

    async fn submit(
        &self,
        limits: LimitRequest,
        deadline: tokio::time::Instant,
    ) -> Result<RedisDecision, RedisFailure> {
        let (reply, answer) = oneshot::channel();
        let pending = Pending {
            limits,
            reply,
            deadline,
        };
        let sent = if matches!(self.connection.target, Target::Cluster(_)) {
            let tag = pending
                .limits
                .first()
                .map_or("", |(key, _, _)| hash_tag(key));
            let mut batchers = self.batchers.lock().map_err(|_| RedisFailure::BadReply)?;
            // Looked up by `&str` first: the tag is made a `String` only
            // for a batcher's first request.
            let sender = match batchers.get(tag) {
                Some(sender) => sender,
                None => batchers
                    .entry(tag.to_string())
                    .or_insert_with(|| spawn_batcher(self.connection.clone())),
            };
            sender.send(pending)
        } else {
            self.single
                .get_or_init(|| spawn_batcher(self.connection.clone()))
                .send(pending)
        };
        sent.map_err(|_| RedisFailure::BadReply)?;
        match answer.await {
            Ok(Ok(decision)) => Ok(decision),
            Ok(Err(Unanswered::Timeout)) => Err(RedisFailure::Timeout),
            Ok(Err(Unanswered::Failed(message))) => Err(RedisFailure::Batch(message)),
            Err(_) => Err(RedisFailure::BadReply),
        }
    }
}

/// The `{tag}` Redis Cluster hashes a key by.
fn hash_tag(key: &str) -> &str {
    key.find('{')
        .and_then(|open| {
            key[open + 1..]
                .find('}')
                .map(|len| &key[open + 1..open + 1 + len])
        })
        .unwrap_or(key)
}

/// Collects queued requests into batches: at most `MAX_IN_FLIGHT` script
/// calls at once; whatever queues up meanwhile goes in the next call. A
/// call is bounded by the earliest deadline of its requests (they queued
/// in order, so the first's); a request whose deadline passed while it
/// queued is answered so, not sent.
fn spawn_batcher(connection: Arc<Connection>) -> mpsc::UnboundedSender<Pending> {
    let (sender, mut queue) = mpsc::unbounded_channel::<Pending>();
    tokio::spawn(async move {
        let in_flight = Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT));
        while let Some(first) = queue.recv().await {
            let Ok(permit) = in_flight.clone().acquire_owned().await else {
                return;
            };
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match queue.try_recv() {
                    Ok(more) => batch.push(more),
                    Err(_) => break,
                }
            }
            let Some(deadline) = answer_expired(&mut batch, tokio::time::Instant::now()) else {
                continue;
            };
            let connection = connection.clone();
            tokio::spawn(async move {
                let _permit = permit;
                let outcome = tokio::time::timeout_at(deadline, connection.invoke(&batch)).await;
                match outcome {
                    Ok(Ok(decisions)) => {
                        for (pending, decision) in batch.into_iter().zip(decisions) {
                            let _ = pending.reply.send(Ok(decision));
                        }
                    }
                    Ok(Err(error)) => {
                        let failed = Unanswered::Failed(error.to_string());
                        for pending in batch {
                            let _ = pending.reply.send(Err(failed.clone()));
                        }
                    }
                    Err(_) => {
                        for pending in batch {
                            let _ = pending.reply.send(Err(Unanswered::Timeout));
                        }
                    }
                }
            });
        }
    });
    sender
}

/// Answers the requests of `batch` whose deadline is not after `now`
/// (timed out while queued) and takes them out; the earliest deadline of
/// the others, which bounds their call (`None`: none is left).
fn answer_expired(
    batch: &mut Vec<Pending>,
    now: tokio::time::Instant,
) -> Option<tokio::time::Instant> {
    for pending in batch.extract_if(.., |p| p.deadline <= now) {
        let _ = pending.reply.send(Err(Unanswered::Timeout));
    }
    batch.iter().map(|p| p.deadline).min()
}

impl Connection {
    /// Connects and loads the script in the background, so the first
    /// request does not pay for the connection (and TLS) within
    /// `redis_timeout`. While Redis cannot be reached it tries again (after
    /// 1 s, doubling to 30 s) and the backend reads as degraded, until it
    /// is reached or the backend is dropped (a reload that replaced it).
    fn warm_up(self: &Arc<Self>) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let weak = Arc::downgrade(self);
        runtime.spawn(async move {
            let mut backoff = MIN_COOLDOWN;
            let mut warned = false;
            while let Some(connection) = weak.upgrade() {
                match connection.load_script().await {
                    Ok(()) => {
                        tracing::debug!("redis connected; rate-limit script loaded");
                        connection.unreached.store(false, Ordering::Relaxed);
                        return;
                    }
                    Err(error) => {
                        connection.unreached.store(true, Ordering::Relaxed);
                        if !warned {
                            tracing::warn!(%error, "redis is not reachable yet; trying again in the background");
                            warned = true;
                        }
                    }
                }
                drop(connection);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_COOLDOWN);
            }
        });
    }

    /// One attempt at connecting and loading the script, within 5 s.
    async fn load_script(&self) -> Result<(), String> {
        let loaded = tokio::time::timeout(Duration::from_secs(5), async {
            match &self.target {
                Target::Single(manager) => self.script.load_async(&mut manager.clone()).await,
                Target::Cluster(cluster) => {
                    let (client, cell) = &**cluster;
                    let conn = cell
                        .get_or_try_init(|| client.get_async_connection())
                        .await?;
                    self.script.load_async(&mut conn.clone()).await
                }
            }
        })
        .await;
        match loaded {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(error)) => Err(error.to_string()),
            Err(_) => Err("no answer within 5s".into()),
        }
    }

    async fn invoke(&self, batch: &[Pending]) -> Result<Vec<RedisDecision>, RedisFailure> {
        let mut invocation = self.script.prepare_invoke();
        invocation.arg(batch.len()).arg(packed_limits(batch));
        for pending in batch {
            for (key, _, _) in &pending.limits {
                invocation.key(key);
            }
        }
        let reply: Vec<u8> = match &self.target {
            Target::Single(manager) => {
                let mut conn = manager.clone();
                invocation.invoke_async(&mut conn).await?
            }
            Target::Cluster(cluster) => {
                let (client, cell) = &**cluster;
                let conn = cell
                    .get_or_try_init(|| client.get_async_connection())
                    .await?;
                let mut conn = conn.clone();
                invocation.invoke_async(&mut conn).await?
            }
        };
        let numbers = integers(&reply)?;
        parse_reply(&numbers, batch.iter().map(|p| p.limits.len()))
    }
}

/// The script's `ARGV[2]`: per request, its number of limits, then each
/// limit's emission interval, burst and enforce flag, separated by spaces.
fn packed_limits(batch: &[Pending]) -> String {
    let mut packed = String::with_capacity(batch.len() * 32);
    let mut digits = itoa::Buffer::new();
    for pending in batch {
        packed.push_str(digits.format(pending.limits.len()));
        for (_, gcra, enforced) in &pending.limits {
            packed.push(' ');
            packed.push_str(digits.format(gcra.emission_us));
            packed.push(' ');
            packed.push_str(digits.format(gcra.burst));
            packed.push_str(if *enforced { " 1" } else { " 0" });
        }
        packed.push(' ');
    }
    packed
}

/// The script's reply: integers separated by single spaces.
fn integers(reply: &[u8]) -> Result<Vec<i64>, RedisFailure> {
    let count = reply.iter().filter(|&&b| b == b' ').count() + 1;
    let mut numbers = Vec::with_capacity(count);
    for field in reply.split(|&b| b == b' ') {
        numbers.push(integer(field).ok_or(RedisFailure::BadReply)?);
    }
    Ok(numbers)
}

/// One decimal integer, `-` allowed first; `None` for anything else or
/// past the range of `i64` (digit by digit: `str::parse` after a UTF-8
/// check cost several times more, measured).
fn integer(field: &[u8]) -> Option<i64> {
    let (negative, digits) = match field {
        [b'-', rest @ ..] => (true, rest),
        _ => (false, field),
    };
    if digits.is_empty() {
        return None;
    }
    // Accumulated below zero, so `i64::MIN` fits too.
    let mut value: i64 = 0;
    for &b in digits {
        if !b.is_ascii_digit() {
            return None;
        }
        value = value.checked_mul(10)?.checked_sub(i64::from(b - b'0'))?;
    }
    if negative {
        Some(value)
    } else {
        value.checked_neg()
    }
}

fn parse_reply(
    reply: &[i64],
    limits_per_request: impl Iterator<Item = usize>,
) -> Result<Vec<RedisDecision>, RedisFailure> {
    let (&now, mut rest) = reply.split_first().ok_or(RedisFailure::BadReply)?;
    let mut decisions = Vec::new();
    for limits in limits_per_request {
        let (&admitted, tail) = rest.split_first().ok_or(RedisFailure::BadReply)?;
        if tail.len() < 2 * limits {
            return Err(RedisFailure::BadReply);
        }
        let (pairs, tail) = tail.split_at(2 * limits);
        decisions.push(RedisDecision {
            now,
            admitted: admitted == 1,
            limits: pairs
                .chunks_exact(2)
                .map(|pair| RedisLimitResult {
                    allowed: pair[0] == 1,
                    // The script sends `tat` less `now`.
                    tat: now.saturating_add(pair[1]),
                })
                .collect(),
        });
        rest = tail;
    }
    if rest.is_empty() {
        Ok(decisions)
    } else {
        Err(RedisFailure::BadReply)
    }
}

#[cfg(test)]
mod tests;
