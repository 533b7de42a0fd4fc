//! Account operation batches: what the admin API and the scheduler ask workers to do to a
//! set of accounts, and the progress events a worker publishes while it does it.
//!
//! A batch is one maintenance job; its id is the job id. Its progress travels on the event
//! bus like any job's events (each carries the running totals, so the latest one is a
//! snapshot), which is why any gateway replica can stream a batch another one started.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// What to do to each account.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccountOp {
    /// Ask the upstream for the quota (per mode) and apply it to the pool.
    Refresh,
    /// Accept the terms, set a birth date and switch NSFW content on.
    EnableNsfw,
    /// Delete every online asset of the account.
    ClearAssets,
    /// Count the online assets of the account.
    LoadAssets,
}

impl AccountOp {
    pub fn as_str(self) -> &'static str {
        match self {
            AccountOp::Refresh => "refresh",
            AccountOp::EnableNsfw => "enable_nsfw",
            AccountOp::ClearAssets => "clear_assets",
            AccountOp::LoadAssets => "load_assets",
        }
    }
}

/// The payload of an account batch job. Accounts are named by id: a raw token never
/// travels on the queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountJob {
    pub op: AccountOp,
    pub token_ids: Vec<String>,
    /// Who asked (`admin` or a scheduler task), for logs.
    #[serde(default)]
    pub origin: String,
    /// Accounts the caller left out on purpose (`skip_tagged`), reported in the summary.
    #[serde(default)]
    pub skipped: u64,
}

/// The state of a batch as its events report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BatchStage {
    Progress,
    Done,
    Error,
    Cancelled,
}

/// One progress event of a batch: running totals, plus the result or error at the end.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BatchProgress {
    pub stage: BatchStage,
    pub op: AccountOp,
    pub total: u64,
    pub processed: u64,
    pub ok: u64,
    pub fail: u64,
    /// Accounts left out before the batch started (already done).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub skipped: u64,
    /// Per-account results keyed by token id (set on `done` and `cancelled`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl BatchProgress {
    pub fn is_final(&self) -> bool {
        self.stage != BatchStage::Progress
    }
}
