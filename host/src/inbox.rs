//! Inboxes for synchronous invocations: where a reply finds its caller.
//!
//! Rule: an inbox belongs to the process that opened it. A reply for an open
//! inbox goes to its waiting caller; a reply for an inbox whose caller has
//! gone (timed out, dropped) is an abandoned execution, recorded by the
//! owner; a reply for an inbox this process does not own is parked in the
//! store for the owner (PostgreSQL, where any dispatcher may run it).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

/// How long a process remembers inboxes whose callers gave up, so that a
/// late reply is recognised as its own abandoned execution.
const REMEMBER_GONE: Duration = Duration::from_secs(3600);

/// What a synchronous invocation produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReplyMsg {
    /// The handler returned, with this body (if any).
    Ok(Option<Vec<u8>>),
    /// The invocation failed; the error text.
    Err(String),
}

/// Where a reply went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// To its waiting caller.
    Delivered,
    /// The inbox is ours but its caller has gone: an abandoned execution.
    Gone,
    /// Not an inbox of this process.
    NotOurs,
}

/// This process's inboxes.
#[derive(Default)]
pub struct Inbox {
    open: Mutex<HashMap<String, oneshot::Sender<ReplyMsg>>>,
    gone: Mutex<HashMap<String, Instant>>,
}

impl Inbox {
    /// Open a fresh inbox (`_INBOX.<uuid>`) and the receiver its reply arrives on.
    pub fn open(&self) -> (String, oneshot::Receiver<ReplyMsg>) {
        let id = format!("_INBOX.{}", uuid::Uuid::new_v4().simple());
        let (tx, rx) = oneshot::channel();
        lock(&self.open).insert(id.clone(), tx);
        (id, rx)
    }

    /// The caller stopped waiting.
    pub fn close(&self, id: &str) {
        if lock(&self.open).remove(id).is_some() {
            let mut gone = lock(&self.gone);
            let now = Instant::now();
            gone.retain(|_, t| now.duration_since(*t) < REMEMBER_GONE);
            gone.insert(id.to_owned(), now);
        }
    }

    /// Whether this process opened `id` (open or gone).
    pub fn owns(&self, id: &str) -> bool {
        lock(&self.open).contains_key(id) || lock(&self.gone).contains_key(id)
    }

    /// Hand a reply to its caller if the inbox is ours.
    pub fn deliver(&self, id: &str, reply: ReplyMsg) -> Delivery {
        let sender = lock(&self.open).remove(id);
        match sender {
            Some(tx) => match tx.send(reply) {
                Ok(()) => Delivery::Delivered,
                Err(_) => {
                    // The receiver was dropped without `close`.
                    lock(&self.gone).insert(id.to_owned(), Instant::now());
                    Delivery::Gone
                }
            },
            None if lock(&self.gone).remove(id).is_some() => Delivery::Gone,
            None => Delivery::NotOurs,
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delivery_paths() {
        let inbox = Inbox::default();
        let (a, mut rx) = inbox.open();
        assert!(a.starts_with("_INBOX."));
        assert_eq!(inbox.deliver(&a, ReplyMsg::Ok(None)), Delivery::Delivered);
        assert_eq!(rx.try_recv().unwrap(), ReplyMsg::Ok(None));

        let (b, _rx) = inbox.open();
        inbox.close(&b);
        assert!(inbox.owns(&b));
        assert_eq!(inbox.deliver(&b, ReplyMsg::Err("x".into())), Delivery::Gone);
        assert_eq!(
            inbox.deliver("_INBOX.other", ReplyMsg::Ok(None)),
            Delivery::NotOurs
        );

        let (c, rx) = inbox.open();
        drop(rx);
        assert_eq!(inbox.deliver(&c, ReplyMsg::Ok(None)), Delivery::Gone);
    }
}
