//! Webhooks: the JSON document posted for each message an alias
//! receives, and the durable queue of those posts with every attempt
//! recorded. The queue lives in `data/outbound.sqlite` beside the outbound
//! mail, under the same key: like mail for other servers, a webhook's
//! payload must be readable by the server to be sent.

use rusqlite::params;
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::outbound::Outbound;

/// The event a payload reports.
pub const EVENT_RECEIVED: &str = "message.received";

/// Where one webhook posts, with its signing secret (for the MX only;
/// administration never sees the secret again after creation).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookTarget {
    /// The webhook's id.
    pub id: i64,
    /// Where to POST.
    pub url: String,
    /// HMAC-SHA256 key.
    pub secret: Vec<u8>,
}

impl std::fmt::Debug for WebhookTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookTarget")
            .field("id", &self.id)
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

/// The JSON document POSTed for each message an alias receives.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WebhookPayload {
    /// Unique id of this event; the same on every retry (use it to
    /// ignore a repeat).
    pub id: String,
    /// Always `message.received`.
    pub event: String,
    /// When the MX accepted the message, Unix seconds.
    pub received_at: i64,
    /// The alias that received it.
    pub alias: String,
    /// The SMTP envelope.
    pub envelope: WebhookEnvelope,
    /// Every header field in order, values decoded to text.
    pub headers: Vec<WebhookHeader>,
    /// The decoded subject.
    pub subject: Option<String>,
    /// Authors.
    pub from: Vec<WebhookAddress>,
    /// Primary recipients.
    pub to: Vec<WebhookAddress>,
    /// Copied recipients.
    pub cc: Vec<WebhookAddress>,
    /// Where replies go.
    pub reply_to: Vec<WebhookAddress>,
    /// The Date header, RFC 3339.
    pub date: Option<String>,
    /// The Message-ID, without angle brackets.
    pub message_id: Option<String>,
    /// The text body (decoded; converted from HTML when there is no text
    /// part).
    pub text: Option<String>,
    /// The HTML body, if any.
    pub html: Option<String>,
    /// Attachments, their content in base64.
    pub attachments: Vec<WebhookAttachment>,
    /// Size of the message as received, in octets.
    pub raw_size: u64,
}

/// The SMTP envelope of a received message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WebhookEnvelope {
    /// MAIL FROM (empty for a bounce).
    pub from: String,
    /// RCPT TO: the alias this payload is for.
    pub to: Vec<String>,
    /// The sending server's address.
    pub remote_ip: String,
    /// The name it gave in EHLO/HELO.
    pub helo: String,
}

/// One header field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WebhookHeader {
    /// The field name as written.
    pub name: String,
    /// The value, unfolded and decoded (RFC 2047).
    pub value: String,
}

/// A mailbox in an address header.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WebhookAddress {
    /// The display name.
    pub name: Option<String>,
    /// The address.
    pub address: Option<String>,
}

/// An attachment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WebhookAttachment {
    /// Its file name, if given.
    pub filename: Option<String>,
    /// Its media type, e.g. `application/pdf`.
    pub content_type: String,
    /// Decoded size in octets.
    pub size: u64,
    /// The decoded content, base64.
    pub content_base64: String,
}

/// Where one post stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum DeliveryStatus {
    /// Waiting for its next attempt.
    Pending,
    /// A 2xx answer came.
    Delivered,
    /// Retried until the time ran out.
    Failed,
}

/// One attempt at a post.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WebhookAttempt {
    /// When, Unix seconds.
    pub at: i64,
    /// The HTTP status, when an answer came.
    pub status: Option<u16>,
    /// What went wrong, when it did.
    pub error: Option<String>,
    /// How long it took, milliseconds.
    pub duration_ms: u64,
}

/// One post of one event to one webhook, with its attempts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WebhookDelivery {
    /// Row id.
    pub id: i64,
    /// The webhook.
    pub webhook_id: i64,
    /// The alias whose mail it reports.
    pub alias: String,
    /// Where it posts.
    pub url: String,
    /// The payload's `id`.
    pub event_id: String,
    /// Where it stands.
    pub status: DeliveryStatus,
    /// When it was queued, Unix seconds.
    pub created_at: i64,
    /// When it is tried next (pending only).
    pub next_at: Option<i64>,
    /// Every attempt so far, oldest first.
    pub attempts: Vec<WebhookAttempt>,
}

/// A post due now: what the sender needs.
#[derive(Clone)]
pub struct DuePost {
    /// Row id.
    pub id: i64,
    /// Where to POST.
    pub url: String,
    /// HMAC-SHA256 key.
    pub secret: Vec<u8>,
    /// The JSON body.
    pub body: Vec<u8>,
    /// The payload's `id`.
    pub event_id: String,
    /// Attempts so far.
    pub attempts: u32,
    /// When it was queued.
    pub created_at: i64,
}

impl std::fmt::Debug for DuePost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DuePost")
            .field("id", &self.id)
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

/// The tables, created with the outbound queue.
pub(crate) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS webhook_posts (
    id         INTEGER PRIMARY KEY,
    webhook_id INTEGER NOT NULL,
    alias      TEXT NOT NULL,
    url        TEXT NOT NULL,
    secret     BLOB NOT NULL,
    event_id   TEXT NOT NULL,
    body       BLOB NOT NULL,
    status     TEXT NOT NULL DEFAULT 'pending',
    attempts   INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL,
    next_at    INTEGER,
    done_at    INTEGER
);
CREATE INDEX IF NOT EXISTS webhook_posts_due ON webhook_posts (next_at) WHERE status = 'pending';
CREATE INDEX IF NOT EXISTS webhook_posts_alias ON webhook_posts (alias, id);
CREATE TABLE IF NOT EXISTS webhook_attempts (
    post        INTEGER NOT NULL REFERENCES webhook_posts (id) ON DELETE CASCADE,
    at          INTEGER NOT NULL,
    status      INTEGER,
    error       TEXT,
    duration_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS webhook_attempts_post ON webhook_attempts (post);
";

/// Finished posts are kept this long for the admin view.
const KEEP_FINISHED_SECS: i64 = 7 * 24 * 3600;

impl Outbound {
    /// Queues a post of `body` (event `event_id`) to `target` for
    /// `alias`, due at once; durable when it returns. Finished posts
    /// older than a week are forgotten here.
    pub fn enqueue_webhook(
        &mut self,
        target: &WebhookTarget,
        alias: &str,
        event_id: &str,
        body: &[u8],
        now: i64,
    ) -> Result<i64> {
        let tx = self.conn.transaction()?;
        tx.execute(
            "DELETE FROM webhook_posts WHERE status != 'pending' AND done_at < ?1",
            [now - KEEP_FINISHED_SECS],
        )?;
        tx.execute(
            "INSERT INTO webhook_posts (webhook_id, alias, url, secret, event_id, body, created_at, next_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7)",
            params![target.id, alias, target.url, target.secret, event_id, body, now],
        )?;
        let id = tx.last_insert_rowid();
        tx.commit()?;
        Ok(id)
    }

    /// Pending posts due at `now`, oldest first, at most `limit`.
    pub fn due_webhooks(&self, now: i64, limit: usize) -> Result<Vec<DuePost>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT id, url, secret, body, event_id, attempts, created_at FROM webhook_posts
             WHERE status = 'pending' AND next_at <= ?1 ORDER BY next_at, id LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![now, limit as i64], |r| {
            Ok(DuePost {
                id: r.get(0)?,
                url: r.get(1)?,
                secret: r.get(2)?,
                body: r.get(3)?,
                event_id: r.get(4)?,
                attempts: r.get(5)?,
                created_at: r.get(6)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// When the next pending post is due.
    pub fn next_webhook_due(&self) -> Result<Option<i64>> {
        Ok(self.conn.query_row(
            "SELECT min(next_at) FROM webhook_posts WHERE status = 'pending'",
            [],
            |r| r.get(0),
        )?)
    }

    /// Records an attempt; the post then waits until `next_at`, or
    /// finishes with `status` (delivered or failed) when `next_at` is
    /// `None`.
    pub fn record_webhook_attempt(
        &mut self,
        id: i64,
        attempt: &WebhookAttempt,
        next_at: Option<i64>,
        status: DeliveryStatus,
    ) -> Result<()> {
        let tx = self.conn.transaction()?;
        tx.execute(
            "INSERT INTO webhook_attempts (post, at, status, error, duration_ms)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                id,
                attempt.at,
                attempt.status,
                attempt.error,
                attempt.duration_ms as i64
            ],
        )?;
        let status = match status {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Delivered => "delivered",
            DeliveryStatus::Failed => "failed",
        };
        tx.execute(
            "UPDATE webhook_posts SET attempts = attempts + 1, next_at = ?2, status = ?3,
                 done_at = CASE WHEN ?3 = 'pending' THEN NULL ELSE ?4 END
             WHERE id = ?1",
            params![id, next_at, status, attempt.at],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// The latest posts for `alias` (newest first, at most `limit`), with
    /// their attempts.
    pub fn webhook_deliveries(&self, alias: &str, limit: usize) -> Result<Vec<WebhookDelivery>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT id, webhook_id, alias, url, event_id, status, created_at, next_at
             FROM webhook_posts WHERE alias = ?1 ORDER BY id DESC LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![alias, limit as i64], |r| {
            let status = match r.get::<_, String>(5)?.as_str() {
                "delivered" => DeliveryStatus::Delivered,
                "failed" => DeliveryStatus::Failed,
                _ => DeliveryStatus::Pending,
            };
            Ok(WebhookDelivery {
                id: r.get(0)?,
                webhook_id: r.get(1)?,
                alias: r.get(2)?,
                url: r.get(3)?,
                event_id: r.get(4)?,
                status,
                created_at: r.get(6)?,
                next_at: if status == DeliveryStatus::Pending {
                    r.get(7)?
                } else {
                    None
                },
                attempts: Vec::new(),
            })
        })?;
        let mut out: Vec<WebhookDelivery> = rows.collect::<rusqlite::Result<_>>()?;
        let mut attempts = self.conn.prepare_cached(
            "SELECT at, status, error, duration_ms FROM webhook_attempts
             WHERE post = ?1 ORDER BY rowid",
        )?;
        for d in &mut out {
            let rows = attempts.query_map([d.id], |r| {
                Ok(WebhookAttempt {
                    at: r.get(0)?,
                    status: r.get(1)?,
                    error: r.get(2)?,
                    duration_ms: r.get::<_, i64>(3)? as u64,
                })
            })?;
            d.attempts = rows.collect::<rusqlite::Result<_>>()?;
        }
        Ok(out)
    }
}
