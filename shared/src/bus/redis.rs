//! The Redis event bus.
//!
//! Keys, all under the deployment prefix:
//! - `<prefix>:ev:<job>`: a Stream of the job's events (field `data`, the event's JSON),
//!   capped at about `replay_max_events` entries and expiring `replay_ttl` after the last
//!   event;
//! - `<prefix>:live:<job>`: the pub/sub channel live events are published on;
//! - `<prefix>:cancel:<job>`: the cancel flag, expiring like the stream.
//!
//! Live delivery uses ONE pub/sub connection per `RedisBus`, shared by every subscriber:
//! thousands of open streams cost one connection plus a bounded channel each. The
//! connection is subscribed to a job's channel while the job has at least one subscriber.
//!
//! If that connection breaks, every live subscriber's stream ends: events published while
//! it was down are lost to pub/sub, so callers must fall back to [`EventBus::replay`] from
//! their last cursor and subscribe again. The next `subscribe` opens a new connection.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use futures::{Stream, StreamExt};
use redis::aio::{ConnectionManager, PubSubSink, PubSubStream};
use tokio::sync::mpsc;
use tokio::task::AbortHandle;
use uuid::Uuid;

use super::{BusError, EventBus, EventStream};
use crate::event::JobEvent;

/// Events a live subscriber may fall behind by before it loses its subscription.
const LIVE_BUFFER: usize = 256;

/// Bound on a SUBSCRIBE round trip, so a dead connection cannot hang `subscribe`.
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(5);

/// A Redis [`EventBus`]. See the module documentation for the keys and the live channel.
pub struct RedisBus {
    commands: ConnectionManager,
    keys: Keys,
    replay_max_events: usize,
    replay_ttl: Duration,
    live: Arc<LiveHub>,
    publish_script: redis::Script,
}

impl std::fmt::Debug for RedisBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBus")
            .field("prefix", &self.keys.prefix)
            .finish_non_exhaustive()
    }
}

struct Keys {
    prefix: String,
}

impl Keys {
    fn events(&self, job_id: Uuid) -> String {
        format!("{}:ev:{}", self.prefix, job_id)
    }

    fn live(&self, job_id: Uuid) -> String {
        format!("{}:live:{}", self.prefix, job_id)
    }

    fn cancel(&self, job_id: Uuid) -> String {
        format!("{}:cancel:{}", self.prefix, job_id)
    }
}

fn unavailable(context: &str, err: impl std::fmt::Display) -> BusError {
    BusError::Unavailable(format!("{context}: {err}"))
}

impl RedisBus {
    /// Connects the command connection (reconnecting on its own when it drops); the live
    /// pub/sub connection is opened by the first `subscribe`.
    pub async fn connect(
        url: &str,
        prefix: &str,
        replay_max_events: usize,
        replay_ttl: Duration,
    ) -> Result<RedisBus, BusError> {
        // The parser's message may quote the URL, password included.
        let client =
            redis::Client::open(url).map_err(|_| BusError::Other("invalid Redis URL".into()))?;
        // The client's default 500 ms response timeout fails a job whenever a busy process
        // polls a reply late; the pool allows seconds too.
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(5)))
            .set_response_timeout(Some(Duration::from_secs(5)));
        let commands = client
            .get_connection_manager_with_config(config)
            .await
            .map_err(|e| unavailable("cannot connect to Redis", e))?;
        Ok(RedisBus {
            commands,
            keys: Keys {
                prefix: prefix.to_owned(),
            },
            replay_max_events: replay_max_events.max(1),
            replay_ttl,
            publish_script: redis::Script::new(include_str!("lua/publish.lua")),
            live: Arc::new(LiveHub {
                client,
                session: tokio::sync::Mutex::new(None),
                routes: Mutex::new(Routes::default()),
            }),
        })
    }

    /// Retention in milliseconds, at least one.
    fn ttl_ms(&self) -> u64 {
        u64::try_from(self.replay_ttl.as_millis())
            .unwrap_or(u64::MAX)
            .max(1)
    }
}

#[async_trait]
impl EventBus for RedisBus {
    async fn subscribe(&self, job_id: Uuid) -> Result<EventStream, BusError> {
        let subscription = LiveHub::subscribe(&self.live, self.keys.live(job_id)).await?;
        Ok(subscription.boxed())
    }

    async fn publish(&self, event: &JobEvent) -> Result<(), BusError> {
        let json = serde_json::to_string(event)
            .map_err(|e| BusError::Other(format!("encode event: {e}")))?;
        let stream = self.keys.events(event.job_id);
        // One script, so a busy stream costs one command per event (see lua/publish.lua).
        // The channel key is passed as a key too, which keeps the script cluster-clean.
        self.publish_script
            .key(&stream)
            .key(self.keys.live(event.job_id))
            .arg(&json)
            .arg(self.replay_max_events)
            .arg(self.ttl_ms())
            .invoke_async::<()>(&mut self.commands.clone())
            .await
            .map_err(|e| unavailable("cannot publish event", e))
    }

    async fn replay(
        &self,
        job_id: Uuid,
        after: Option<(u32, u64)>,
    ) -> Result<Vec<JobEvent>, BusError> {
        type Entry = (String, Vec<(String, Vec<u8>)>);
        let entries: Vec<Entry> = redis::cmd("XRANGE")
            .arg(self.keys.events(job_id))
            .arg("-")
            .arg("+")
            .query_async(&mut self.commands.clone())
            .await
            .map_err(|e| unavailable("cannot read replay stream", e))?;
        let events: Vec<JobEvent> = entries
            .iter()
            .flat_map(|(_, fields)| fields.iter())
            .filter(|(field, _)| field == "data")
            .filter_map(|(_, json)| decode(json))
            .collect();
        Ok(super::memory::after_cursor(&events, after))
    }

    async fn cancel(&self, job_id: Uuid) -> Result<(), BusError> {
        redis::cmd("SET")
            .arg(self.keys.cancel(job_id))
            .arg(1)
            .arg("PX")
            .arg(self.ttl_ms())
            .exec_async(&mut self.commands.clone())
            .await
            .map_err(|e| unavailable("cannot set cancel flag", e))
    }

    async fn is_cancelled(&self, job_id: Uuid) -> Result<bool, BusError> {
        redis::cmd("EXISTS")
            .arg(self.keys.cancel(job_id))
            .query_async(&mut self.commands.clone())
            .await
            .map_err(|e| unavailable("cannot read cancel flag", e))
    }

    async fn ping(&self) -> Result<(), BusError> {
        redis::cmd("PING")
            .exec_async(&mut self.commands.clone())
            .await
            .map_err(|e| unavailable("Redis ping failed", e))
    }
}

fn decode(json: &[u8]) -> Option<JobEvent> {
    match serde_json::from_slice(json) {
        Ok(event) => Some(event),
        Err(err) => {
            // The error's text can quote the event, which may hold user content.
            tracing::warn!(category = ?err.classify(), "undecodable job event skipped");
            None
        }
    }
}

/// The shared pub/sub connection and the subscribers it fans out to.
struct LiveHub {
    client: redis::Client,
    /// The current connection. Its lock also serializes SUBSCRIBE and UNSUBSCRIBE, so a
    /// channel's server-side subscription always matches its entry in `routes`.
    session: tokio::sync::Mutex<Option<Session>>,
    /// Which subscribers each subscribed channel feeds. Read by the pump for every message,
    /// so it is a plain mutex never held across an await.
    routes: Mutex<Routes>,
}

/// One pub/sub connection: the half that sends (UN)SUBSCRIBE, and the task that reads
/// messages from the other half.
struct Session {
    sink: PubSubSink,
    generation: u64,
    pump: AbortHandle,
}

impl Drop for Session {
    fn drop(&mut self) {
        self.pump.abort();
    }
}

/// A channel has an entry exactly while the connection is subscribed to it (an entry may
/// briefly be empty: its last subscriber left and the UNSUBSCRIBE is on its way).
#[derive(Default)]
struct Routes {
    channels: HashMap<String, HashMap<u64, mpsc::Sender<JobEvent>>>,
    next_subscriber: u64,
    /// Numbers sessions, so a pump reporting a lost connection cannot close a newer one.
    generation: u64,
}

impl LiveHub {
    fn routes(&self) -> MutexGuard<'_, Routes> {
        // Every update leaves the maps consistent, so a poisoned lock is still usable.
        self.routes.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn subscribe(hub: &Arc<LiveHub>, channel: String) -> Result<Subscription, BusError> {
        let (sender, receiver) = mpsc::channel(LIVE_BUFFER);
        let mut session = hub.session.lock().await;
        if session.is_none() {
            *session = Some(hub.open_session().await?);
        }
        let (id, first) = {
            let mut routes = hub.routes();
            let id = routes.next_subscriber;
            routes.next_subscriber += 1;
            let first = !routes.channels.contains_key(&channel);
            routes
                .channels
                .entry(channel.clone())
                .or_default()
                .insert(id, sender);
            (id, first)
        };
        let subscription = Subscription {
            events: receiver,
            _leave: Leave {
                hub: Arc::downgrade(hub),
                channel: channel.clone(),
                id,
            },
        };
        if first {
            let sink = &mut session.as_mut().expect("opened above").sink;
            let subscribed = tokio::time::timeout(SUBSCRIBE_TIMEOUT, sink.subscribe(&channel))
                .await
                .map_err(|_| BusError::Unavailable("SUBSCRIBE timed out".into()))
                .and_then(|r| r.map_err(|e| unavailable("SUBSCRIBE failed", e)));
            if let Err(err) = subscribed {
                // The connection is unusable; drop it so the next subscribe starts afresh.
                hub.close_session(&mut session);
                return Err(err);
            }
        }
        Ok(subscription)
    }

    async fn open_session(self: &Arc<Self>) -> Result<Session, BusError> {
        let pubsub = self
            .client
            .get_async_pubsub()
            .await
            .map_err(|e| unavailable("cannot open the pub/sub connection", e))?;
        let (sink, stream) = pubsub.split();
        let generation = {
            let mut routes = self.routes();
            routes.generation += 1;
            routes.generation
        };
        let pump = tokio::spawn(pump(Arc::downgrade(self), stream, generation));
        Ok(Session {
            sink,
            generation,
            pump: pump.abort_handle(),
        })
    }

    /// Forgets the connection and ends every subscriber's stream (dropping its sender).
    fn close_session(&self, session: &mut Option<Session>) {
        let mut routes = self.routes();
        routes.channels.clear();
        drop(routes);
        *session = None;
    }

    /// Hands one message to the channel's subscribers. A subscriber whose buffer is full
    /// has fallen too far behind and loses its subscription.
    fn fan_out(self: &Arc<Self>, channel: &str, event: JobEvent) {
        let mut routes = self.routes();
        let Some(subscribers) = routes.channels.get_mut(channel) else {
            return;
        };
        subscribers.retain(|_, sender| match sender.try_send(event.clone()) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                tracing::warn!(channel, "live subscriber fell behind; ending its stream");
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        });
        if subscribers.is_empty() {
            drop(routes);
            self.spawn_unsubscribe(channel.to_owned());
        }
    }

    fn spawn_unsubscribe(self: &Arc<Self>, channel: String) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let hub = self.clone();
        runtime.spawn(async move { hub.unsubscribe_if_unused(channel).await });
    }

    async fn unsubscribe_if_unused(&self, channel: String) {
        let mut session = self.session.lock().await;
        let Some(current) = session.as_mut() else {
            return;
        };
        {
            let mut routes = self.routes();
            match routes.channels.get(&channel) {
                Some(subscribers) if subscribers.is_empty() => {
                    routes.channels.remove(&channel);
                }
                // Someone subscribed again meanwhile, or the connection was replaced.
                _ => return,
            }
        }
        let unsubscribed =
            tokio::time::timeout(SUBSCRIBE_TIMEOUT, current.sink.unsubscribe(&channel)).await;
        if !matches!(unsubscribed, Ok(Ok(()))) {
            tracing::warn!(
                channel,
                "UNSUBSCRIBE failed; dropping the pub/sub connection"
            );
            self.close_session(&mut session);
        }
    }

    /// Called by a pump whose connection ended.
    async fn disconnected(&self, generation: u64) {
        let mut session = self.session.lock().await;
        if session.as_ref().is_some_and(|s| s.generation == generation) {
            tracing::warn!("pub/sub connection lost; live subscribers must resume from replay");
            self.close_session(&mut session);
        }
    }
}

/// Reads the pub/sub connection and fans messages out until it ends.
async fn pump(hub: Weak<LiveHub>, mut stream: PubSubStream, generation: u64) {
    while let Some(message) = stream.next().await {
        let Some(hub) = hub.upgrade() else {
            return;
        };
        if let Some(event) = decode(message.get_payload_bytes()) {
            hub.fan_out(message.get_channel_name(), event);
        }
    }
    if let Some(hub) = hub.upgrade() {
        hub.disconnected(generation).await;
    }
}

/// One subscriber's live events. Dropping it leaves the channel.
struct Subscription {
    events: mpsc::Receiver<JobEvent>,
    _leave: Leave,
}

impl Stream for Subscription {
    type Item = JobEvent;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<JobEvent>> {
        self.events.poll_recv(cx)
    }
}

struct Leave {
    hub: Weak<LiveHub>,
    channel: String,
    id: u64,
}

impl Drop for Leave {
    fn drop(&mut self) {
        let Some(hub) = self.hub.upgrade() else {
            return;
        };
        let mut routes = hub.routes();
        let Some(subscribers) = routes.channels.get_mut(&self.channel) else {
            return;
        };
        if subscribers.remove(&self.id).is_some() && subscribers.is_empty() {
            drop(routes);
            hub.spawn_unsubscribe(std::mem::take(&mut self.channel));
        }
    }
}
