//! The `alerts` tree: which alerts were raised (so each is raised once) and the webhook
//! deliveries still to be made (so they survive a restart).
//!
//! | key                                 | value                                      |
//! |-------------------------------------|--------------------------------------------|
//! | `m` 0 kind 0 task key               | JSON [`AlertMark`] (when it was raised)    |
//! | `q` 0 id (u64 BE, `meta` counter `alert_seq`) | JSON [`PendingDelivery`] without its id |
//! | `dropped`                           | u64 BE: deliveries given up on             |
//!
//! Raising an alert writes its mark and its delivery in one transaction, so a crash can never
//! leave an alert marked as raised whose delivery was lost (or a delivery without its mark,
//! which would be raised again). It is deliberately not part of a backup: after a restore, alerts
//! that still apply are raised again, which at worst repeats a notification.
//!
//! The store does not know what an alert says: a delivery's body is the caller's text.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::codec::read_u64;
use super::meta::increment_in;
use super::{ALERTS, META, Store, StoreError, wtree};

const ALERT_SEQ: &[u8] = b"alert_seq";
const MARK_PREFIX: &[u8] = b"m\0";
const QUEUE_PREFIX: &[u8] = b"q\0";
const DROPPED: &[u8] = b"dropped";

/// An alert raised for one task and one condition.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertMark {
    /// The condition, e.g. `expiring_soon`, `needs_attention`.
    pub kind: String,
    pub task_key: String,
    pub at: DateTime<Utc>,
}

/// A webhook delivery not yet made.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingDelivery {
    /// Assigned by [`Store::record_alert`]; deliveries sort by it (oldest first).
    #[serde(skip)]
    pub id: u64,
    /// The request body, as the caller built it.
    pub body: String,
    pub created_at: DateTime<Utc>,
    pub attempts: u32,
    /// Not before this moment.
    pub next_attempt: DateTime<Utc>,
    pub last_attempt: Option<DateTime<Utc>>,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
}

impl std::fmt::Debug for PendingDelivery {
    // The body names tasks, not patients, but it is the receiver's business: keep it out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingDelivery")
            .field("id", &self.id)
            .field("body_len", &self.body.len())
            .field("created_at", &self.created_at)
            .field("attempts", &self.attempts)
            .field("next_attempt", &self.next_attempt)
            .field("last_error", &self.last_error)
            .finish()
    }
}

fn mark_key(kind: &str, task_key: &str) -> Result<Vec<u8>, StoreError> {
    if kind.is_empty() || kind.contains('\0') || task_key.is_empty() {
        return Err(StoreError::Invalid {
            what: "alert mark",
            why: "the kind and the task key must be non-empty (and the kind free of NUL)".into(),
        });
    }
    let mut key = MARK_PREFIX.to_vec();
    key.extend_from_slice(kind.as_bytes());
    key.push(0);
    key.extend_from_slice(task_key.as_bytes());
    Ok(key)
}

fn queue_key(id: u64) -> Vec<u8> {
    let mut key = QUEUE_PREFIX.to_vec();
    key.extend_from_slice(&id.to_be_bytes());
    key
}

fn encode<T: Serialize>(what: &'static str, value: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value).map_err(|e| StoreError::Codec {
        what,
        detail: e.to_string(),
    })
}

impl Store {
    /// Every alert raised and not forgotten.
    pub fn alert_marks(&self) -> Result<Vec<AlertMark>, StoreError> {
        self.read(ALERTS)?
            .scan_prefix(MARK_PREFIX)?
            .map(|entry| {
                let (_, value) = entry?;
                serde_json::from_slice(value.value())
                    .map_err(|e| self.corrupt(format!("an alert mark does not decode: {e}")))
            })
            .collect()
    }

    /// Marks an alert as raised and, with `delivery_body`, queues its webhook delivery (due at
    /// once), atomically. Returns the delivery's id. Durable with the next [`Store::flush`].
    pub fn record_alert(
        &self,
        mark: &AlertMark,
        delivery_body: Option<&str>,
    ) -> Result<Option<u64>, StoreError> {
        let mark_key = mark_key(&mark.kind, &mark.task_key)?;
        let mark_value = encode("alert mark", mark)?;
        let path = self.path.as_path();
        self.write(|tx| {
            let mut tree = wtree(tx, ALERTS, path)?;
            tree.insert(&mark_key, &mark_value)?;
            let Some(body) = delivery_body else {
                return Ok(None);
            };
            let id = increment_in(&mut wtree(tx, META, path)?, ALERT_SEQ, path)?;
            let pending = PendingDelivery {
                id,
                body: body.to_owned(),
                created_at: mark.at,
                attempts: 0,
                next_attempt: mark.at,
                last_attempt: None,
                last_error: None,
            };
            tree.insert(&queue_key(id), &encode("webhook delivery", &pending)?)?;
            Ok(Some(id))
        })
    }

    /// Forgets alert marks, so the same condition can be raised again for those tasks.
    pub fn forget_alert_marks(&self, marks: &[AlertMark]) -> Result<(), StoreError> {
        if marks.is_empty() {
            return Ok(());
        }
        let keys = marks
            .iter()
            .map(|m| mark_key(&m.kind, &m.task_key))
            .collect::<Result<Vec<_>, _>>()?;
        self.write(|tx| {
            let mut tree = wtree(tx, ALERTS, &self.path)?;
            for key in &keys {
                tree.remove(key)?;
            }
            Ok(())
        })
    }

    /// Deliveries not yet made, oldest first.
    pub fn pending_deliveries(&self) -> Result<Vec<PendingDelivery>, StoreError> {
        self.read(ALERTS)?
            .scan_prefix(QUEUE_PREFIX)?
            .map(|entry| {
                let (key, value) = entry?;
                let id = key
                    .value()
                    .get(QUEUE_PREFIX.len()..)
                    .and_then(read_u64)
                    .ok_or_else(|| self.corrupt("a webhook delivery key is malformed"))?;
                let mut d: PendingDelivery =
                    serde_json::from_slice(value.value()).map_err(|e| {
                        self.corrupt(format!("webhook delivery {id} does not decode: {e}"))
                    })?;
                d.id = id;
                Ok(d)
            })
            .collect()
    }

    /// Stores a delivery's new attempt count, next attempt and last error.
    pub fn update_delivery(&self, delivery: &PendingDelivery) -> Result<(), StoreError> {
        let value = encode("webhook delivery", delivery)?;
        self.write(|tx| {
            wtree(tx, ALERTS, &self.path)?
                .insert(&queue_key(delivery.id), &value)
                .map(drop)
        })
    }

    /// Removes a delivery: it was made, or (`gave_up`) it is abandoned and counted as dropped.
    pub fn finish_delivery(&self, id: u64, gave_up: bool) -> Result<(), StoreError> {
        let path = self.path.as_path();
        self.write(|tx| {
            let mut t = wtree(tx, ALERTS, path)?;
            if t.remove(&queue_key(id))?.is_some() && gave_up {
                let dropped = match t.get(DROPPED)? {
                    None => 0,
                    Some(v) => read_u64(&v).ok_or_else(|| {
                        super::error::corrupt(path, "the dropped-deliveries counter is malformed")
                    })?,
                };
                t.insert(DROPPED, &(dropped + 1).to_be_bytes())?;
            }
            Ok(())
        })
    }

    /// How many deliveries were given up on since the store was created.
    pub fn dropped_deliveries(&self) -> Result<u64, StoreError> {
        match self.read(ALERTS)?.get(DROPPED)? {
            None => Ok(0),
            Some(v) => read_u64(&v)
                .ok_or_else(|| self.corrupt("the dropped-deliveries counter is malformed")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{IdatKey, StoreOptions};

    fn store(opts: &StoreOptions) -> Store {
        Store::open(opts).unwrap()
    }

    fn mark(kind: &str, key: &str) -> AlertMark {
        AlertMark {
            kind: kind.into(),
            task_key: key.into(),
            at: Utc::now(),
        }
    }

    #[test]
    fn marks_and_deliveries_survive_a_reopen_and_drops_are_counted() {
        let dir = tempfile::tempdir().unwrap();
        let opts = StoreOptions::new(dir.path(), IdatKey::generate());
        {
            let s = store(&opts);
            s.record_alert(&mark("needs_attention", "send_idat/1"), Some("{\"a\":1}"))
                .unwrap();
            s.record_alert(&mark("expiring_soon", "send_idat/1"), None)
                .unwrap();
            s.record_alert(&mark("expiring_soon", "send_idat/2"), Some("{\"b\":2}"))
                .unwrap();
            s.flush().unwrap();
        }
        let s = store(&opts);
        let mut kinds: Vec<(String, String)> = s
            .alert_marks()
            .unwrap()
            .into_iter()
            .map(|m| (m.kind, m.task_key))
            .collect();
        kinds.sort();
        assert_eq!(
            kinds,
            [
                ("expiring_soon".to_string(), "send_idat/1".to_string()),
                ("expiring_soon".to_string(), "send_idat/2".to_string()),
                ("needs_attention".to_string(), "send_idat/1".to_string()),
            ]
        );
        let pending = s.pending_deliveries().unwrap();
        assert_eq!(pending.len(), 2);
        assert_eq!(pending[0].body, "{\"a\":1}", "oldest first");
        assert!(pending[0].id < pending[1].id);

        let mut first = pending[0].clone();
        first.attempts = 3;
        first.last_error = Some("HTTP 503".into());
        s.update_delivery(&first).unwrap();
        assert_eq!(s.pending_deliveries().unwrap()[0].attempts, 3);

        s.finish_delivery(first.id, true).unwrap();
        s.finish_delivery(pending[1].id, false).unwrap();
        // Finishing twice does not count twice.
        s.finish_delivery(first.id, true).unwrap();
        assert!(s.pending_deliveries().unwrap().is_empty());
        assert_eq!(s.dropped_deliveries().unwrap(), 1);

        s.forget_alert_marks(&[mark("expiring_soon", "send_idat/1")])
            .unwrap();
        assert_eq!(s.alert_marks().unwrap().len(), 2);
    }

    #[test]
    fn an_empty_task_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(&StoreOptions::new(dir.path(), IdatKey::generate()));
        let err = s
            .record_alert(&mark("expiring_soon", ""), None)
            .unwrap_err();
        assert!(matches!(err, StoreError::Invalid { .. }), "{err:?}");
    }
}
