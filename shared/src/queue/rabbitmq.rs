//! The RabbitMQ job queue (AMQP 0-9-1 through lapin).
//!
//! Topology, all durable so it survives a broker restart:
//! - one quorum queue per job kind, `<prefix>.jobs.<kind>`, whose delivery limit and
//!   dead-letter exchange the broker enforces (on RabbitMQ 3.x only quorum queues have a
//!   delivery limit);
//! - a fanout exchange `<prefix>.dlx` bound to `<prefix>.jobs.dead`, where jobs land once
//!   they exhaust their deliveries or are dead-lettered on purpose.
//!
//! One AMQP connection per `RabbitQueue`, re-opened lazily when it drops. Publishing goes
//! through one confirm-mode channel shared by all callers: each publish waits for its own
//! confirm without holding any lock, so concurrent publishes pipeline. Each consumer gets
//! its own channel, so its prefetch limit and its unacked deliveries are its own; when the
//! connection drops, a consumer's stream yields one error and ends, and the caller consumes
//! again.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use lapin::options::{
    BasicConsumeOptions, BasicNackOptions, BasicPublishOptions, BasicQosOptions,
    BasicRejectOptions, ConfirmSelectOptions, ExchangeDeclareOptions, ExchangeDeleteOptions,
    QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::uri::AMQPUri;
use lapin::{
    BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, ExchangeKind,
};
use tokio::sync::Mutex;

use super::{Acker, Deliveries, Delivery, JobQueue, QueueError};
use crate::job::{JobEnvelope, JobKind};

/// AMQP delivery mode 2: the broker writes the message to disk before confirming it.
const PERSISTENT: u8 = 2;

/// AMQP header that carries a job's W3C trace context.
const TRACEPARENT_HEADER: &str = "traceparent";

/// Prefetch of a `consume_dead` consumer; dead letters are rare and handled quickly.
const DEAD_PREFETCH: u16 = 16;

/// A [`JobQueue`] on RabbitMQ. See the module documentation for the topology.
pub struct RabbitQueue {
    /// Holds the broker password; never printed.
    uri: AMQPUri,
    names: Names,
    delivery_limit: u32,
    confirm_timeout: Duration,
    link: Mutex<Link>,
}

impl std::fmt::Debug for RabbitQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RabbitQueue")
            .field("prefix", &self.names.prefix)
            .field("delivery_limit", &self.delivery_limit)
            .finish_non_exhaustive()
    }
}

/// The current connection and its publishing channel, replaced when they break.
#[derive(Default)]
struct Link {
    connection: Option<Arc<Connection>>,
    publisher: Option<Channel>,
}

/// Queue and exchange names derived from the deployment prefix.
struct Names {
    prefix: String,
}

impl Names {
    fn jobs(&self, kind: JobKind) -> String {
        format!("{}.jobs.{}", self.prefix, kind.as_str())
    }

    fn dead(&self) -> String {
        format!("{}.jobs.dead", self.prefix)
    }

    fn dlx(&self) -> String {
        format!("{}.dlx", self.prefix)
    }
}

fn unavailable(context: &str, err: impl std::fmt::Display) -> QueueError {
    QueueError::Unavailable(format!("{context}: {err}"))
}

impl RabbitQueue {
    /// Connects, declares the topology, and opens the publishing channel.
    ///
    /// `delivery_limit` is the number of deliveries a job gets before it is dead-lettered;
    /// `confirm_timeout` bounds each publish, reconnecting included, and each connection
    /// attempt.
    pub async fn connect(
        url: &str,
        prefix: &str,
        delivery_limit: u32,
        confirm_timeout: Duration,
    ) -> Result<RabbitQueue, QueueError> {
        // The parser's message may quote the URL, password included.
        let uri: AMQPUri = url
            .parse()
            .map_err(|_| QueueError::Other("invalid AMQP URL".into()))?;
        let queue = RabbitQueue {
            uri,
            names: Names {
                prefix: prefix.to_owned(),
            },
            delivery_limit: delivery_limit.max(1),
            confirm_timeout,
            link: Mutex::new(Link::default()),
        };
        queue.publisher().await?;
        Ok(queue)
    }

    /// Deletes this deployment's queues (with any jobs in them) and its exchange.
    pub async fn delete_all(&self) {
        let channel = match self.channel().await {
            Ok(channel) => channel,
            Err(err) => {
                tracing::warn!(error = %err, "cannot delete queues");
                return;
            }
        };
        let queues = JobKind::ALL
            .iter()
            .map(|kind| self.names.jobs(*kind))
            .chain([self.names.dead()]);
        for queue in queues {
            if let Err(err) = channel
                .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
                .await
            {
                tracing::warn!(queue, error = %err, "cannot delete queue");
            }
        }
        if let Err(err) = channel
            .exchange_delete(
                self.names.dlx().as_str().into(),
                ExchangeDeleteOptions::default(),
            )
            .await
        {
            tracing::warn!(error = %err, "cannot delete dead-letter exchange");
        }
    }

    /// The live connection, opening (and declaring the topology on) a new one if the
    /// previous one is gone. Called with the link locked, so only one caller reconnects.
    async fn ensure_connection(&self, link: &mut Link) -> Result<Arc<Connection>, QueueError> {
        if let Some(connection) = &link.connection
            && connection.status().connected()
        {
            return Ok(connection.clone());
        }
        link.publisher = None;
        let props = ConnectionProperties::default()
            .with_connection_name(LongString::from(format!("grok2api {}", self.names.prefix)));
        let connection = tokio::time::timeout(
            self.confirm_timeout,
            Connection::connect_uri(self.uri.clone(), props),
        )
        .await
        .map_err(|_| QueueError::Unavailable("timed out connecting to the broker".into()))?
        .map_err(|e| unavailable("cannot connect to the broker", e))?;
        self.declare_topology(&connection).await?;
        let connection = Arc::new(connection);
        link.connection = Some(connection.clone());
        Ok(connection)
    }

    /// Declares exchanges and queues; idempotent, so it runs on every new connection.
    async fn declare_topology(&self, connection: &Connection) -> Result<(), QueueError> {
        let channel = connection
            .create_channel()
            .await
            .map_err(|e| unavailable("cannot open a channel", e))?;
        let durable = QueueDeclareOptions {
            // Survives a broker restart; with persistent messages, so do the jobs. Neither
            // exclusive nor auto-delete (the defaults): every worker shares the queue, and
            // it stays when they all disconnect.
            durable: true,
            ..QueueDeclareOptions::default()
        };
        channel
            .exchange_declare(
                self.names.dlx().as_str().into(),
                // Every dead letter goes to the one dead queue, whatever its routing key.
                ExchangeKind::Fanout,
                ExchangeDeclareOptions {
                    durable: true,
                    ..ExchangeDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .map_err(|e| unavailable("cannot declare the dead-letter exchange", e))?;
        channel
            .queue_declare(
                self.names.dead().as_str().into(),
                durable,
                FieldTable::default(),
            )
            .await
            .map_err(|e| unavailable("cannot declare the dead-letter queue", e))?;
        channel
            .queue_bind(
                self.names.dead().as_str().into(),
                self.names.dlx().as_str().into(),
                "".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|e| unavailable("cannot bind the dead-letter queue", e))?;
        for kind in JobKind::ALL {
            channel
                .queue_declare(
                    self.names.jobs(kind).as_str().into(),
                    durable,
                    self.job_queue_arguments(),
                )
                .await
                .map_err(|e| unavailable("cannot declare a job queue", e))?;
        }
        // Best effort: the channel is closed anyway once its last handle is dropped.
        let _ = channel.close(200, "topology declared".into()).await;
        Ok(())
    }

    fn job_queue_arguments(&self) -> FieldTable {
        let mut args = FieldTable::default();
        // Replicated, durable queue type; the only one with a delivery limit on 3.x.
        args.insert("x-queue-type".into(), long_string("quorum"));
        // The broker counts every return of a message (nack with requeue, or a consumer's
        // channel closing with it unacked) and dead-letters it once the count exceeds this.
        // The first delivery is not a return, so `limit - 1` returns make `limit` deliveries.
        args.insert(
            "x-delivery-limit".into(),
            AMQPValue::LongLongInt(i64::from(self.delivery_limit) - 1),
        );
        // Where rejected and over-limit messages go.
        args.insert(
            "x-dead-letter-exchange".into(),
            long_string(&self.names.dlx()),
        );
        // Keep a dead letter in this queue until the dead-letter queue has confirmed it,
        // instead of dropping it if that hand-over fails. Requires `reject-publish`.
        args.insert(
            "x-dead-letter-strategy".into(),
            long_string("at-least-once"),
        );
        // Were a length limit ever set, refuse new publishes (a nack, so the gateway
        // answers 503) rather than silently dropping the oldest jobs.
        args.insert("x-overflow".into(), long_string("reject-publish"));
        args
    }

    /// A new channel on the live connection.
    async fn channel(&self) -> Result<Channel, QueueError> {
        let connection = {
            let mut link = self.link.lock().await;
            self.ensure_connection(&mut link).await?
        };
        connection
            .create_channel()
            .await
            .map_err(|e| unavailable("cannot open a channel", e))
    }

    /// The shared publishing channel, in confirm mode. The lock is released before the
    /// caller publishes, so it only serializes (re)connecting.
    async fn publisher(&self) -> Result<Channel, QueueError> {
        let mut link = self.link.lock().await;
        if let Some(channel) = &link.publisher
            && channel.status().connected()
        {
            return Ok(channel.clone());
        }
        let connection = self.ensure_connection(&mut link).await?;
        let channel = connection
            .create_channel()
            .await
            .map_err(|e| unavailable("cannot open a channel", e))?;
        // Publisher confirms: the broker acks each message once it is safely enqueued
        // (for a quorum queue: written by a majority of replicas) or nacks it.
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(|e| unavailable("cannot enable publisher confirms", e))?;
        link.publisher = Some(channel.clone());
        Ok(channel)
    }

    /// Publishes one message and waits for its confirm. A channel found dead before the
    /// message left (the connection dropped since the last publish) is replaced once:
    /// nothing was sent, so trying again cannot duplicate the job.
    async fn send(
        &self,
        queue: &str,
        payload: &[u8],
        properties: BasicProperties,
    ) -> Result<Confirmation, QueueError> {
        let mut replaced = false;
        loop {
            let channel = self.publisher().await?;
            let published = channel
                .basic_publish(
                    // The default exchange routes by queue name.
                    "".into(),
                    queue.into(),
                    // Mandatory: a message that reaches no queue comes back (basic.return)
                    // instead of vanishing, and the caller reports it as a failure.
                    BasicPublishOptions {
                        mandatory: true,
                        immediate: false,
                    },
                    payload,
                    properties.clone(),
                )
                .await;
            match published {
                Ok(confirm) => {
                    return confirm
                        .await
                        .map_err(|e| unavailable("publish not confirmed", e));
                }
                Err(err) if !replaced && never_sent(&err) => replaced = true,
                Err(err) => return Err(unavailable("publish failed", err)),
            }
        }
    }

    async fn consume_queue(
        &self,
        queue: String,
        prefetch: u16,
        dead: bool,
    ) -> Result<Deliveries, QueueError> {
        let channel = self.channel().await?;
        // Per-consumer prefetch (`global: false`): the broker stops delivering to this
        // consumer while it holds `prefetch` unacked messages.
        channel
            .basic_qos(prefetch.max(1), BasicQosOptions { global: false })
            .await
            .map_err(|e| unavailable("cannot set prefetch", e))?;
        let consumer = channel
            .basic_consume(
                queue.as_str().into(),
                // Empty tag: the broker generates a unique one.
                "".into(),
                // Manual acks (`no_ack: false`), not exclusive: workers compete for jobs.
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|e| unavailable("cannot start consuming", e))?;
        let stream = consumer.filter_map(move |item| {
            let channel = channel.clone();
            let queue = queue.clone();
            async move {
                match item {
                    Ok(delivery) => accept(delivery, channel, &queue, dead).await.map(Ok),
                    Err(err) => Some(Err(unavailable("consumer stopped", err))),
                }
            }
        });
        Ok(stream.boxed())
    }
}

/// Errors lapin raises before handing a message to the connection.
fn never_sent(err: &lapin::Error) -> bool {
    matches!(
        err.kind(),
        lapin::ErrorKind::InvalidChannelState(..) | lapin::ErrorKind::InvalidConnectionState(..)
    )
}

fn long_string(value: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(value.as_bytes().to_vec()))
}

/// Decodes one broker delivery. A payload that is not a job envelope cannot be run or
/// reported, so it goes to the dead-letter exchange (or, from the dead queue, away).
async fn accept(
    delivery: lapin::message::Delivery,
    channel: Channel,
    queue: &str,
    dead: bool,
) -> Option<Delivery> {
    match serde_json::from_slice::<JobEnvelope>(&delivery.data) {
        Ok(mut job) => {
            if job.traceparent.is_none() {
                job.traceparent = traceparent_header(&delivery.properties);
            }
            let delivery_count = delivery_count(&delivery.properties);
            Some(Delivery {
                job,
                delivery_count,
                acker: Box::new(RabbitAcker {
                    acker: delivery.acker,
                    settled: AtomicBool::new(false),
                    channel,
                }),
            })
        }
        Err(err) => {
            // The error's text can quote the payload; log only where parsing failed.
            tracing::error!(
                queue,
                message_id = delivery.properties.message_id().as_ref().map(ShortString::as_str),
                bytes = delivery.data.len(),
                category = ?err.classify(),
                line = err.line(),
                column = err.column(),
                dead,
                "undecodable job message rejected"
            );
            let rejected = delivery
                .acker
                .reject(BasicRejectOptions { requeue: false })
                .await;
            if let Err(err) = rejected {
                tracing::warn!(queue, error = %err, "cannot reject undecodable message");
            }
            None
        }
    }
}

/// Persistent JSON with the job id as message id and, when the job carries one, its W3C
/// trace context in a `traceparent` header (so AMQP-aware tools can follow the trace too).
fn message_properties(job: &JobEnvelope) -> BasicProperties {
    let properties = BasicProperties::default()
        .with_delivery_mode(PERSISTENT)
        .with_content_type("application/json".into())
        .with_message_id(job.id.to_string().into());
    match &job.traceparent {
        Some(traceparent) => {
            let mut headers = FieldTable::default();
            headers.insert(TRACEPARENT_HEADER.into(), long_string(traceparent));
            properties.with_headers(headers)
        }
        None => properties,
    }
}

/// The `traceparent` header of a message, if it has a readable one.
fn traceparent_header(properties: &BasicProperties) -> Option<String> {
    match properties
        .headers()
        .as_ref()?
        .inner()
        .get(TRACEPARENT_HEADER)?
    {
        AMQPValue::LongString(s) => String::from_utf8(s.as_bytes().to_vec()).ok(),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        _ => None,
    }
}

/// Quorum queues stamp `x-delivery-count` (returns so far) on redeliveries only.
fn delivery_count(properties: &BasicProperties) -> u32 {
    let returns = properties
        .headers()
        .as_ref()
        .and_then(|headers| headers.inner().get("x-delivery-count"))
        .and_then(amqp_integer)
        .unwrap_or(0);
    u32::try_from(returns).unwrap_or(u32::MAX - 1) + 1
}

fn amqp_integer(value: &AMQPValue) -> Option<i64> {
    match value {
        AMQPValue::ShortShortInt(v) => Some(i64::from(*v)),
        AMQPValue::ShortShortUInt(v) => Some(i64::from(*v)),
        AMQPValue::ShortInt(v) => Some(i64::from(*v)),
        AMQPValue::ShortUInt(v) => Some(i64::from(*v)),
        AMQPValue::LongInt(v) => Some(i64::from(*v)),
        AMQPValue::LongUInt(v) => Some(i64::from(*v)),
        AMQPValue::LongLongInt(v) => Some(*v),
        _ => None,
    }
}

/// Settles one broker delivery. Keeps its channel open until settled: closing the channel
/// would hand the job back to the broker.
struct RabbitAcker {
    acker: lapin::Acker,
    settled: AtomicBool,
    channel: Channel,
}

impl RabbitAcker {
    fn settle_once(&self) -> Result<(), QueueError> {
        if self.settled.swap(true, Ordering::AcqRel) {
            return Err(QueueError::Other("delivery already settled".into()));
        }
        Ok(())
    }
}

/// lapin answers `false` when the channel died first; the broker then requeues the job.
fn settled(result: lapin::Result<bool>) -> Result<(), QueueError> {
    match result {
        Ok(true) => Ok(()),
        Ok(false) => Err(QueueError::Unavailable(
            "channel closed before the delivery was settled; the job will be redelivered".into(),
        )),
        Err(err) => Err(unavailable("cannot settle delivery", err)),
    }
}

#[async_trait]
impl Acker for RabbitAcker {
    async fn ack(&self) -> Result<(), QueueError> {
        self.settle_once()?;
        settled(self.acker.ack(Default::default()).await)
    }

    async fn retry(&self) -> Result<(), QueueError> {
        self.settle_once()?;
        // Requeue: the broker counts the return and redelivers or dead-letters the job.
        let options = BasicNackOptions {
            multiple: false,
            requeue: true,
        };
        settled(self.acker.nack(options).await)
    }

    async fn dead_letter(&self) -> Result<(), QueueError> {
        self.settle_once()?;
        // No requeue: the broker routes the message to the queue's dead-letter exchange.
        settled(
            self.acker
                .reject(BasicRejectOptions { requeue: false })
                .await,
        )
    }
}

impl Drop for RabbitAcker {
    /// An unsettled delivery whose holder went away is handed back now, rather than when
    /// the consumer's channel eventually closes.
    fn drop(&mut self) {
        if self.settled.load(Ordering::Acquire) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let acker = self.acker.clone();
        let channel = self.channel.clone();
        runtime.spawn(async move {
            let options = BasicNackOptions {
                multiple: false,
                requeue: true,
            };
            if let Err(err) = acker.nack(options).await {
                tracing::debug!(error = %err, "cannot hand back a dropped delivery");
            }
            drop(channel);
        });
    }
}

#[async_trait]
impl JobQueue for RabbitQueue {
    async fn publish(&self, job: &JobEnvelope) -> Result<(), QueueError> {
        let payload =
            serde_json::to_vec(job).map_err(|e| QueueError::Other(format!("encode job: {e}")))?;
        let properties = message_properties(job);
        let queue = self.names.jobs(job.kind);
        let confirmation = tokio::time::timeout(
            self.confirm_timeout,
            self.send(&queue, &payload, properties),
        )
        .await
        .map_err(|_| QueueError::Unavailable("broker did not confirm in time".into()))??;
        match confirmation {
            Confirmation::Ack(None) => Ok(()),
            Confirmation::Ack(Some(returned)) => Err(QueueError::Unavailable(format!(
                "broker returned the job: {}",
                returned.reply_text
            ))),
            Confirmation::Nack(_) => Err(QueueError::Unavailable("broker refused the job".into())),
            Confirmation::NotRequested => Err(QueueError::Other(
                "publisher confirms are not enabled".into(),
            )),
        }
    }

    async fn consume(&self, kind: JobKind, prefetch: u16) -> Result<Deliveries, QueueError> {
        self.consume_queue(self.names.jobs(kind), prefetch, false)
            .await
    }

    async fn consume_dead(&self) -> Result<Deliveries, QueueError> {
        self.consume_queue(self.names.dead(), DEAD_PREFETCH, true)
            .await
    }

    async fn depth(&self, kind: JobKind) -> Result<u64, QueueError> {
        // A passive declare of a missing queue closes the channel, so use a throwaway one.
        let channel = self.channel().await?;
        let queue = channel
            .queue_declare(
                self.names.jobs(kind).as_str().into(),
                QueueDeclareOptions {
                    passive: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .map_err(|e| unavailable("cannot inspect queue", e))?;
        let _ = channel.close(200, "depth read".into()).await;
        Ok(u64::from(queue.message_count()))
    }

    async fn ping(&self) -> Result<(), QueueError> {
        let mut link = self.link.lock().await;
        self.ensure_connection(&mut link).await.map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::JobPayload;

    const TRACEPARENT: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

    #[test]
    fn traceparent_survives_the_envelope_and_the_amqp_headers() {
        let mut job = JobEnvelope::new(JobPayload::Poison { note: "x".into() }, 0);
        job.traceparent = Some(TRACEPARENT.into());
        let properties = message_properties(&job);
        assert_eq!(
            traceparent_header(&properties).as_deref(),
            Some(TRACEPARENT)
        );
        let body = serde_json::to_vec(&job).unwrap();
        let back: JobEnvelope = serde_json::from_slice(&body).unwrap();
        assert_eq!(back.traceparent.as_deref(), Some(TRACEPARENT));
        assert_eq!(back, job);

        job.traceparent = None;
        assert_eq!(traceparent_header(&message_properties(&job)), None);
        let json = String::from_utf8(serde_json::to_vec(&job).unwrap()).unwrap();
        assert!(!json.contains("traceparent"), "{json}");
    }
}
