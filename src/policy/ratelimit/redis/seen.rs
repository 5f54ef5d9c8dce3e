//! Remembering a value for a while, shared by every instance: `SET key 1
//! NX PX ttl`. Replay protection of signed webhooks uses it, so a delivery
//! accepted by one instance is refused by all of them. Bounded by
//! `redis_timeout` and skipped during a cool-down, like the rate limits.

use std::time::Duration;

use super::{RedisBackend, RedisFailure, Target};

impl RedisBackend {
    /// Stores `key` for `ttl` unless it is already there: `Ok(true)` the
    /// first time, `Ok(false)` while it is remembered.
    pub async fn set_once(&self, key: &str, ttl: Duration) -> Result<bool, RedisFailure> {
        let millis = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        let mut command = redis::cmd("SET");
        command.arg(key).arg(1).arg("NX").arg("PX").arg(millis);
        let call = async {
            let reply: Option<String> = match &self.connection.target {
                Target::Single(manager) => command.query_async(&mut manager.clone()).await?,
                Target::Cluster(cluster) => {
                    let (client, cell) = &**cluster;
                    let conn = cell
                        .get_or_try_init(|| client.get_async_connection())
                        .await?;
                    command.query_async(&mut conn.clone()).await?
                }
            };
            Ok::<_, RedisFailure>(reply.is_some())
        };
        self.guarded(call).await
    }
}
