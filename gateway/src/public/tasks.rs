//! Where public tasks live between the `start` call and the stream that runs them: Redis on
//! the distributed shape (so any gateway replica can stream a task another one created),
//! or this process's memory on embedded backends. Every entry expires on its own.
//!
//! Task ids are 128 random bits: holding one is the capability to stream the task, which is
//! why the streaming routes need no key (and no key ever travels in a URL).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rand::RngCore;
use redis::AsyncCommands;
use redis::aio::ConnectionManager;
use serde::{Deserialize, Serialize};
use tokio::sync::OnceCell;
use uuid::Uuid;

use crate::error::ApiError;
use crate::state::AppState;

/// How long a task lives without being renewed (the original product's 600 s).
pub const TASK_TTL: Duration = Duration::from_secs(600);
/// Most tasks one in-process store holds; past it, `start` answers 503.
const MEMORY_CAPACITY: usize = 10_000;

/// What a task is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskKind {
    Imagine,
    Video,
}

impl TaskKind {
    fn as_str(self) -> &'static str {
        match self {
            TaskKind::Imagine => "imagine",
            TaskKind::Video => "video",
        }
    }
}

/// One stored task: its parameters as the start call validated them, and the job running
/// it right now (so `stop` on any replica can cancel that job).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Task {
    pub kind: TaskKind,
    pub params: serde_json::Value,
    #[serde(default)]
    pub job_id: Option<Uuid>,
    pub created_ms: i64,
}

/// A fresh task id: 32 hex digits of 128 random bits.
pub fn new_task_id() -> String {
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// A string that can be a task id (anything else cannot name a task, so it is not looked up).
pub fn is_task_id(s: &str) -> bool {
    s.len() == 32 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

enum Backend {
    Memory(Mutex<HashMap<String, (Instant, String)>>),
    Redis {
        conn: ConnectionManager,
        prefix: String,
    },
}

/// The task store of one gateway, connected on first use.
#[derive(Default)]
pub struct TaskStoreCell(OnceCell<TaskStore>);

pub struct TaskStore {
    backend: Backend,
}

fn unavailable() -> ApiError {
    ApiError::unavailable("The task store is unavailable, try again shortly", 2)
}

impl TaskStore {
    /// The store of this gateway: Redis when `backend.redis_url` is set, else in-process.
    pub async fn of(state: &AppState) -> Result<&TaskStore, ApiError> {
        state
            .public_tasks
            .0
            .get_or_try_init(|| async {
                let url = &state.config.backend.redis_url;
                if url.is_empty() {
                    return Ok(TaskStore {
                        backend: Backend::Memory(Mutex::new(HashMap::new())),
                    });
                }
                // The parser's message may quote the URL, password included: not logged.
                let client = redis::Client::open(url.expose()).map_err(|_| unavailable())?;
                // Seconds, not the client's default 500 ms: a busy process reads replies late.
                let config = redis::aio::ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(Duration::from_secs(5)))
                    .set_response_timeout(Some(Duration::from_secs(5)));
                let conn = client
                    .get_connection_manager_with_config(config)
                    .await
                    .map_err(|e| {
                        tracing::error!(kind = ?e.kind(), "task store: cannot connect to Redis");
                        unavailable()
                    })?;
                Ok(TaskStore {
                    backend: Backend::Redis {
                        conn,
                        prefix: state.config.backend.prefix.clone(),
                    },
                })
            })
            .await
    }

    fn key(prefix: &str, kind: TaskKind, id: &str) -> String {
        format!("{prefix}:public:{}:{id}", kind.as_str())
    }

    /// Records a new task of `kind` with its validated `params`; returns its id.
    pub async fn create(
        &self,
        kind: TaskKind,
        params: &impl Serialize,
    ) -> Result<String, ApiError> {
        let id = new_task_id();
        let task = Task {
            kind,
            params: serde_json::to_value(params).map_err(|_| ApiError::internal())?,
            job_id: None,
            created_ms: shared::time::now_ms(),
        };
        self.put(&id, &task).await?;
        Ok(id)
    }

    /// Stores `task` under `id`, replacing what was there, for another [`TASK_TTL`].
    pub async fn put(&self, id: &str, task: &Task) -> Result<(), ApiError> {
        let value = serde_json::to_string(task).map_err(|_| ApiError::internal())?;
        match &self.backend {
            Backend::Memory(map) => {
                let mut map = map.lock().unwrap_or_else(|e| e.into_inner());
                let now = Instant::now();
                if map.len() >= MEMORY_CAPACITY {
                    map.retain(|_, (expires, _)| *expires > now);
                }
                let key = Self::key("", task.kind, id);
                if map.len() >= MEMORY_CAPACITY && !map.contains_key(&key) {
                    return Err(ApiError::unavailable(
                        "Too many playground tasks are open, try again shortly",
                        5,
                    ));
                }
                map.insert(key, (now + TASK_TTL, value));
                Ok(())
            }
            Backend::Redis { conn, prefix } => {
                let mut conn = conn.clone();
                let key = Self::key(prefix, task.kind, id);
                conn.set_ex::<_, _, ()>(key, value, TASK_TTL.as_secs())
                    .await
                    .map_err(|e| {
                        tracing::error!(kind = ?e.kind(), "task store write failed");
                        unavailable()
                    })
            }
        }
    }

    /// The live task `id` of this kind, if any.
    pub async fn get(&self, kind: TaskKind, id: &str) -> Result<Option<Task>, ApiError> {
        if !is_task_id(id) {
            return Ok(None);
        }
        let raw: Option<String> = match &self.backend {
            Backend::Memory(map) => {
                let mut map = map.lock().unwrap_or_else(|e| e.into_inner());
                let key = Self::key("", kind, id);
                match map.get(&key) {
                    Some((expires, _)) if *expires <= Instant::now() => {
                        map.remove(&key);
                        None
                    }
                    Some((_, v)) => Some(v.clone()),
                    None => None,
                }
            }
            Backend::Redis { conn, prefix } => {
                let mut conn = conn.clone();
                conn.get(Self::key(prefix, kind, id)).await.map_err(|e| {
                    tracing::error!(kind = ?e.kind(), "task store read failed");
                    unavailable()
                })?
            }
        };
        Ok(raw.and_then(|v| serde_json::from_str(&v).ok()))
    }

    /// Removes task `id`; the task as it was, if it existed.
    pub async fn take(&self, kind: TaskKind, id: &str) -> Result<Option<Task>, ApiError> {
        if !is_task_id(id) {
            return Ok(None);
        }
        let raw: Option<String> = match &self.backend {
            Backend::Memory(map) => {
                let mut map = map.lock().unwrap_or_else(|e| e.into_inner());
                map.remove(&Self::key("", kind, id))
                    .filter(|(expires, _)| *expires > Instant::now())
                    .map(|(_, v)| v)
            }
            Backend::Redis { conn, prefix } => {
                let mut conn = conn.clone();
                // GETDEL: of two concurrent stops, exactly one sees the task.
                redis::cmd("GETDEL")
                    .arg(Self::key(prefix, kind, id))
                    .query_async(&mut conn)
                    .await
                    .map_err(|e| {
                        tracing::error!(kind = ?e.kind(), "task store delete failed");
                        unavailable()
                    })?
            }
        };
        Ok(raw.and_then(|v| serde_json::from_str(&v).ok()))
    }

    /// Marks task `id` as claimed by one stream; false when another stream holds it.
    pub async fn claim(&self, kind: TaskKind, id: &str) -> Result<bool, ApiError> {
        match &self.backend {
            Backend::Memory(map) => {
                let mut map = map.lock().unwrap_or_else(|e| e.into_inner());
                let key = format!("{}:claim", Self::key("", kind, id));
                let now = Instant::now();
                match map.get(&key) {
                    Some((expires, _)) if *expires > now => Ok(false),
                    _ => {
                        map.insert(key, (now + TASK_TTL, String::new()));
                        Ok(true)
                    }
                }
            }
            Backend::Redis { conn, prefix } => {
                let mut conn = conn.clone();
                let key = format!("{}:claim", Self::key(prefix, kind, id));
                let set: Option<String> = redis::cmd("SET")
                    .arg(key)
                    .arg("1")
                    .arg("NX")
                    .arg("EX")
                    .arg(TASK_TTL.as_secs())
                    .query_async(&mut conn)
                    .await
                    .map_err(|e| {
                        tracing::error!(kind = ?e.kind(), "task store claim failed");
                        unavailable()
                    })?;
                Ok(set.is_some())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_ids_are_128_bit_hex() {
        let a = new_task_id();
        assert!(is_task_id(&a));
        assert_ne!(a, new_task_id());
        assert!(!is_task_id("../../etc"));
        assert!(!is_task_id(&a[..31]));
    }
}
